"""AckLedger: acknowledgements leave in arrival order, only once settled."""

from __future__ import annotations

import pytest

from services.core.acks import AckLedger


def test_acks_are_released_in_arrival_order_only() -> None:
    """A settled message waits for every earlier one before its ack is released."""
    ledger = AckLedger()
    for token, mid in enumerate([11, 12, 13]):
        ledger.arrived(token, mid)
    ledger.settle([1, 2])
    assert ledger.release() == []
    ledger.settle([0])
    assert ledger.release() == [11, 12, 13]
    assert len(ledger) == 0


def test_partial_prefix_is_released() -> None:
    """The settled prefix leaves; the rest waits."""
    ledger = AckLedger()
    for token in range(4):
        ledger.arrived(token, 100 + token)
    ledger.settle([0, 1, 3])
    assert ledger.release() == [100, 101]
    assert len(ledger) == 2


def test_unknown_tokens_are_ignored_when_settling() -> None:
    """Tokens of QoS 0 messages or of a dropped connection are ignored."""
    ledger = AckLedger()
    ledger.arrived(5, 1)
    ledger.settle([1, 2, 5])
    assert ledger.release() == [1]


def test_clear_forgets_pending_messages() -> None:
    """After a disconnect the broker redelivers; the old acks must never be sent."""
    ledger = AckLedger()
    ledger.arrived(0, 1)
    ledger.arrived(1, 2)
    assert ledger.clear() == 2
    ledger.settle([0, 1])
    assert ledger.release() == []


def test_out_of_order_arrival_is_a_bug() -> None:
    """Tokens must grow; anything else is a programming error."""
    ledger = AckLedger()
    ledger.arrived(3, 1)
    with pytest.raises(ValueError, match="out of order"):
        ledger.arrived(2, 2)
