"""The API process's limits: prompt SIGTERM with open streams, header deadline, /metrics."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.fleet import parse_fleet
from services.config import DatabaseSettings
from services.storage.fleet_store import load_fleet
from tests.harness.live import ApiServer, SseClient

FLEET = """
parks:
  - id: lim-park
    factories:
      - id: lim-f1
        devices:
          - {id: lim-meter, type: power_meter}
"""


@pytest.fixture
def server(db_settings: DatabaseSettings, clean_db: str, tmp_path: Path) -> Iterator[ApiServer]:
    """The API as a real process with a short header deadline, over a one-park fleet."""
    load_fleet(clean_db, parse_fleet(FLEET))
    api = ApiServer(db_settings, tmp_path, {"PARKSENSE_API_HEADER_TIMEOUT_S": "1"})
    api.start()
    try:
        yield api
    finally:
        api.stop()


def test_sigterm_ends_open_streams_and_the_process(server: ApiServer) -> None:
    """SIGTERM with two live streams open ends both streams and exits 0, without a SIGKILL."""
    streams = [SseClient(server.host, server.port, "/v1/parks/lim-park/stream") for _ in "ab"]
    try:
        for stream in streams:
            assert stream.status == 200
            stream.wait_for(lambda e: e.event == "signals")
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        # A deadline far above the few seconds allowed, so a slow machine does not fail it;
        # before, open streams held the server until it was killed. uvicorn re-raises the
        # signal once it has shut down cleanly, so the exit status is -SIGTERM.
        assert server.process.wait(15) in {0, -signal.SIGTERM}
        assert all(stream.ended() for stream in streams)
    finally:
        for stream in streams:
            stream.close()


def test_connection_without_request_headers_is_closed(server: ApiServer) -> None:
    """A client that connects and sends only part of its headers is disconnected."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert sock.recv(1024) == b""
    status, _ = server.get("/healthz")
    assert status == 200


def test_metrics_answers_directly(server: ApiServer) -> None:
    """GET /metrics is 200 with the Prometheus text, not a redirect."""
    status, body = server.get("/metrics")
    assert status == 200
    assert "python_info" in body
