"""Storage exceptions."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every storage failure."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        """Create the error, keeping the SQLSTATE when the database gave one."""
        super().__init__(message)
        self.sqlstate = sqlstate


class MigrationError(StorageError):
    """A migration could not be applied."""
