"""Ingest exceptions."""

from __future__ import annotations


class IngestError(Exception):
    """Root of every ingest failure."""


class BrokerUnavailableError(IngestError):
    """The broker could not be reached within the start-up deadline."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        """Create the error with the broker's address."""
        super().__init__(f"MQTT broker {host}:{port} unavailable: {detail}")
        self.host = host
        self.port = port
