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


class UnencodableRowError(StorageError):
    """A row held a value the client could not send as PostgreSQL text.

    Carries SQLSTATE 22021 (character_not_in_repertoire), the code the server gives for a
    NUL it receives, so that the row is classified like any other refused row.
    """

    def __init__(self, message: str) -> None:
        """Create the error with the client's message."""
        super().__init__(message, sqlstate="22021")
