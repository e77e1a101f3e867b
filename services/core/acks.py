"""AckLedger: releases MQTT acknowledgements in arrival order, only once settled."""

from __future__ import annotations

from collections import OrderedDict


class AckLedger:
    """Tracks messages from arrival to acknowledgement.

    MQTT wants PUBACKs in the order the PUBLISH packets arrived [MQTT-4.6.0-2], and a
    message may be acknowledged only once it and every earlier one is stored or recorded
    as a dead letter. Tokens are the caller's arrival numbers; ``ack_id`` is whatever the
    transport needs to acknowledge (the packet id).
    """

    def __init__(self) -> None:
        """Create an empty ledger."""
        self._pending: OrderedDict[int, tuple[int, bool]] = OrderedDict()

    def __len__(self) -> int:
        """Messages arrived and not yet released."""
        return len(self._pending)

    def arrived(self, token: int, ack_id: int) -> None:
        """Record an arrival; tokens must grow."""
        if self._pending and token <= next(reversed(self._pending)):
            raise ValueError(f"token {token} arrived out of order")
        self._pending[token] = (ack_id, False)

    def settle(self, tokens: list[int]) -> None:
        """Mark messages as stored or dead-lettered.

        Tokens the ledger does not hold (forgotten by ``clear`` when their connection
        dropped, or QoS 0 messages that need no acknowledgement) are ignored.
        """
        for token in tokens:
            entry = self._pending.get(token)
            if entry is not None:
                self._pending[token] = (entry[0], True)

    def release(self) -> list[int]:
        """Return the ack ids that may be sent now, in arrival order, and forget them."""
        released: list[int] = []
        while self._pending:
            token, (ack_id, settled) = next(iter(self._pending.items()))
            if not settled:
                break
            del self._pending[token]
            released.append(ack_id)
        return released

    def clear(self) -> int:
        """Forget every pending message (after a broker disconnect, which redelivers them)."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped
