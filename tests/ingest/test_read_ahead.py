"""Ingest reads the socket in large chunks and still sees every packet whole.

paho 2.x asks its private ``_sock_recv`` for one byte, then a length byte at a time, then
the rest of a packet; ``services/ingest/mqtt.py`` serves those reads from one large read.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.config import MqttSettings
from services.ingest.mqtt import _READ_AHEAD_BYTES, _ReadAheadClient
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Row,
    count_rows,
    publish_concurrently,
    stored_rows,
)
from tests.harness.waiting import wait_until


class _Chunks:
    """A socket whose ``recv`` hands out given chunks, recording each size asked for."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.asked: list[int] = []

    def recv(self, bufsize: int) -> bytes:
        self.asked.append(bufsize)
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)

    def close(self) -> None:
        """Paho closes its socket when the client goes; nothing to release here."""
        self.chunks.clear()


def _client_on(sock: _Chunks) -> Any:
    client = _ReadAheadClient(CallbackAPIVersion.VERSION2, client_id="parksense.ingest.t")
    client._sock = sock  # type: ignore[assignment]  # a stand-in for the socket
    return client


def test_small_reads_are_served_from_one_large_read() -> None:
    """Paho's 1-byte and n-byte reads come out of one recv, in order, with nothing lost."""
    data = bytes(range(256)) * 4
    sock = _Chunks([data])
    client = _client_on(sock)
    served = [client._sock_recv(1), client._sock_recv(1), client._sock_recv(100)]
    assert client.read_ahead
    served.append(client._sock_recv(len(data)))
    assert b"".join(served) == data
    assert sock.asked == [_READ_AHEAD_BYTES]
    assert not client.read_ahead


def test_end_of_stream_and_would_block_reach_paho_unchanged() -> None:
    """An empty read (the broker closed) and BlockingIOError pass through to paho."""
    client = _client_on(_Chunks([b""]))
    assert client._sock_recv(1) == b""
    blocked = _client_on(_Chunks([]))
    try:
        blocked._sock_recv(1)
    except BlockingIOError:
        pass
    else:
        raise AssertionError("a read that would block must raise BlockingIOError")


def test_bytes_read_ahead_belong_to_their_socket() -> None:
    """After a reconnect (a new socket) nothing read from the old one is served."""
    client = _client_on(_Chunks([b"old-connection-bytes"]))
    assert client._sock_recv(3) == b"old"
    client._sock = _Chunks([b"new"])  # a reconnect's socket
    assert not client.read_ahead
    assert client._sock_recv(3) == b"new"


def test_messages_of_every_size_arrive_whole(
    fleet: LoadFleet, clean_db: str, mqtt_settings: MqttSettings, worker: IngestProcess
) -> None:
    """Messages from a few bytes to near the payload limit, straddling the read size."""
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=1)
    messages: list[tuple[str, bytes]] = []
    expected: set[Row] = set()
    for m in range(400):
        device = fleet.device_ids[m % fleet.devices]
        # Mostly small messages, some of hundreds of samples (tens of KiB).
        samples = 1 if rng.random() < 0.7 else rng.randint(50, 700)
        body = []
        for s in range(samples):
            ts = start + timedelta(milliseconds=m * 1000 + s)
            value = float(rng.randint(-40, 120))
            body.append({"ts": ts.isoformat(), "metrics": {"temp_c": value}})
            expected.add((device, "temp_c", ts, value))
        messages.append((fleet.topic(device), orjson.dumps(body)))
    assert max(len(p) for _, p in messages) > _READ_AHEAD_BYTES // 2
    publish_concurrently(mqtt_settings, messages, publishers=2)
    wait_until(lambda: count_rows(clean_db, fleet.prefix) >= len(expected), 60)
    assert stored_rows(clean_db, fleet.prefix) == expected


def test_every_message_goes_to_on_message_and_per_topic_callbacks_are_refused() -> None:
    """No topic trie walk per message: ingest never registers per-topic callbacks."""
    client = _ReadAheadClient(CallbackAPIVersion.VERSION2)
    got: list[Any] = []
    client.on_message = lambda _c, _u, message: got.append(message.topic)
    message = mqtt.MQTTMessage(mid=1, topic=b"parksense/v1/p1/f1/m1/telemetry")
    client._handle_on_message(message)
    assert got == ["parksense/v1/p1/f1/m1/telemetry"]
    with pytest.raises(NotImplementedError):
        client.message_callback_add("parksense/#", lambda *_: None)


def test_a_batch_of_acks_is_one_write_of_paho_s_own_pubacks() -> None:
    """ack_all queues the PUBACKs paho would send one by one, as one packet write."""
    client = _ReadAheadClient(CallbackAPIVersion.VERSION2, manual_ack=True)
    client.ack_all([1, 2, 513])
    [batch] = list(client._out_packet)
    client._out_packet.clear()
    for mid in (1, 2, 513):
        client.ack(mid, 1)
    one_by_one = b"".join(bytes(p["packet"]) for p in client._out_packet)
    assert bytes(batch["packet"]) == one_by_one == bytes.fromhex("400200014002000240020201")
    client._out_packet.clear()
    client.ack_all([])
    assert not client._out_packet
