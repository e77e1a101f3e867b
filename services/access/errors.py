"""Access exceptions."""

from __future__ import annotations


class AccessError(Exception):
    """Root of every failure to put credentials in force."""


class BrokerReloadError(AccessError):
    """The broker did not confirm that it loaded the new credentials."""

    def __init__(self, timeout_s: float) -> None:
        """Say how long we waited."""
        super().__init__(
            f"the broker did not load the new credentials within {timeout_s:.0f} s;"
            " the change is stored and takes effect at its next reload"
        )
        self.timeout_s = timeout_s
