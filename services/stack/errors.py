"""Local stack exceptions."""

from __future__ import annotations

from pathlib import Path

INSTALL_HINT = "run deploy/install-system.sh (or `make venv`) to install it"


class StackError(Exception):
    """Root of every local stack failure."""


class MissingComponentError(StackError):
    """A system component (PostgreSQL, TimescaleDB, Mosquitto) is not installed."""

    def __init__(self, component: str, detail: str = "") -> None:
        """Create the error for ``component``, with an install hint."""
        message = f"{component} is not installed"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{message}: {INSTALL_HINT}")
        self.component = component


class ServiceStartError(StackError):
    """A service did not start, or did not become ready before its deadline."""

    def __init__(self, service: str, reason: str, log_file: Path | None = None) -> None:
        """Create the error, pointing at the service's log file when there is one."""
        message = f"{service} {reason}"
        if log_file is not None:
            message += f"; see {log_file}"
        super().__init__(message)
        self.service = service
        self.log_file = log_file
