"""Ingest reads the socket in large chunks and still sees every packet whole.

paho 2.x asks its private ``_sock_recv`` for one byte, then a length byte at a time, then
the rest of a packet; ``services/ingest/mqtt.py`` serves those reads from one large read,
and takes the whole QoS 0/1 PUBLISH packets among them itself (``parse_publishes``),
leaving the rest to paho. These tests hold that contract with paho 2.x's private parts.
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.config import IngestSettings, MqttSettings
from services.core.access import PlatformRole
from services.core.mqtt_publish import Publish, parse_publishes
from services.ingest.mqtt import (
    _READ_AHEAD_BYTES,
    MqttConsumer,
    RawMessage,
    _ReadAheadClient,
)
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import platform_mqtt
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Row,
    count_rows,
    mqtt_client,
    publish_concurrently,
    stored_rows,
    unique_prefix,
)
from tests.harness.waiting import wait_until


class _Chunks:
    """A socket whose ``recv`` hands out given chunks, recording each size asked for."""

    def __init__(self, chunks: list[bytes | OSError]) -> None:
        self.chunks = chunks
        self.asked: list[int] = []

    def recv(self, bufsize: int) -> bytes:
        self.asked.append(bufsize)
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if isinstance(chunk, OSError):
            raise chunk
        return chunk

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


# --- The fast path: whole QoS 0/1 PUBLISH packets taken straight from the bytes read ahead.


def _vbi(value: int) -> bytes:
    """A Variable Byte Integer (MQTT 5 §1.5.5), in its shortest form."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _properties(**values: Any) -> bytes:
    """PUBLISH properties as paho's own encoder writes them (length included)."""
    properties = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(properties, name, value)
    return bytes(properties.pack())


def _publish(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 1,
    mid: int = 7,
    properties: bytes = b"\x00",
    flags: int = 0,
) -> bytes:
    """One MQTT 5 PUBLISH packet (§3.3); ``flags`` adds DUP (8) and RETAIN (1)."""
    name = topic.encode() if isinstance(topic, str) else topic
    packet_id = struct.pack("!H", mid) if qos else b""
    body = struct.pack("!H", len(name)) + name + packet_id + properties + payload
    return bytes([0x30 | qos << 1 | flags]) + _vbi(len(body)) + body


def _through_paho(data: bytes) -> tuple[int, list[Publish]]:
    """What paho's own path makes of one packet: its return code and the messages."""
    got: list[Publish] = []
    client = _ReadAheadClient(
        CallbackAPIVersion.VERSION2, client_id="parksense.ingest.t", protocol=mqtt.MQTTv5
    )
    client._sock = _Chunks([data])  # type: ignore[assignment]  # a stand-in for the socket
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), m.qos, m.mid))
    return client._packet_read(), got


PINGRESP = b"\xd0\x00"
TOPIC = "parksense/v1/hebi-tech/f01/f01-env-1/telemetry"


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (_publish(TOPIC, b'{"ts": 1}', qos=1, mid=513), (TOPIC, b'{"ts": 1}', 1, 513)),
        (_publish(TOPIC, b'{"ts": 1}', qos=0), (TOPIC, b'{"ts": 1}', 0, 0)),
        (_publish(TOPIC, b"", qos=1, mid=65535, flags=9), (TOPIC, b"", 1, 65535)),
        (
            _publish("parksense/v1/园区/工厂/传感器/telemetry", "温度".encode()),
            ("parksense/v1/园区/工厂/传感器/telemetry", "温度".encode(), 1, 7),
        ),
        (
            _publish(
                TOPIC,
                b"{}",
                properties=_properties(
                    UserProperty=[("site", "鹤壁"), ("line", "1")],
                    MessageExpiryInterval=3600,
                    ContentType="application/json",
                    PayloadFormatIndicator=1,
                    ResponseTopic="parksense/v1/reply",
                    CorrelationData=b"\x00\x01",
                    SubscriptionIdentifier=[1, 268_435_455],
                ),
            ),
            (TOPIC, b"{}", 1, 7),
        ),
        (_publish(TOPIC, b"x" * 200), (TOPIC, b"x" * 200, 1, 7)),  # 2-byte remaining length
        (_publish(TOPIC, b"x" * 20_000), (TOPIC, b"x" * 20_000, 1, 7)),  # 3 bytes
        (_publish(TOPIC, b"x" * 2_100_000), (TOPIC, b"x" * 2_100_000, 1, 7)),  # 4 bytes
    ],
    ids=["qos1", "qos0", "dup-retain-empty", "utf8-topic", "properties", "rl2", "rl3", "rl4"],
)
def test_a_whole_publish_is_taken_as_paho_decodes_it(packet: bytes, expected: Publish) -> None:
    """Topic, payload, QoS and packet id are paho's own, whatever the length or properties."""
    taken, at = parse_publishes(packet, 0, 10)
    rc, via_paho = _through_paho(packet)
    assert rc == mqtt.MQTT_ERR_SUCCESS
    assert taken == via_paho == [expected]
    assert at == len(packet)


def test_remaining_lengths_of_one_to_four_bytes_are_read() -> None:
    """Each remaining-length size (§2.1.4) at both of its edges ends the packet exactly."""
    body = len(_publish(TOPIC, b"")) - 2  # topic, packet id, properties: no payload
    sizes = [size - body for edge in (127, 16_383, 2_097_151) for size in (edge, edge + 1)]
    packets = [_publish(TOPIC, b"p" * size, mid=i + 1) for i, size in enumerate(sizes)]
    length_bytes = [next(n for n in range(1, 5) if not p[n] & 0x80) for p in packets]
    assert length_bytes == [1, 2, 2, 3, 3, 4]
    stream = b"".join(packets)
    taken, at = parse_publishes(stream, 0, 100)
    assert [(t, len(p), q, m) for t, p, q, m in taken] == [
        (TOPIC, size, 1, i + 1) for i, size in enumerate(sizes)
    ]
    assert at == len(stream)


def test_a_fifth_remaining_length_byte_is_paho_s_protocol_error() -> None:
    """A length over 4 bytes (§1.5.5) is not taken, and paho refuses it as before."""
    packet = b"\x32\xff\xff\xff\xff\x01" + b"\x00" * 8
    assert parse_publishes(packet, 0, 10) == ([], 0)
    assert _through_paho(packet) == (mqtt.MQTT_ERR_PROTOCOL, [])


def test_a_truncated_packet_is_left_for_paho() -> None:
    """Cut anywhere, only the packets that end before the cut are taken; the rest waits."""
    packets = [
        _publish(TOPIC, b"first"),
        _publish("parksense/v1/园区/工厂/d/telemetry", b"second", qos=0),
        _publish(TOPIC, b"x" * 300, properties=_properties(MessageExpiryInterval=60)),
    ]
    stream = b"".join(packets)
    ends = [sum(len(p) for p in packets[: i + 1]) for i in range(len(packets))]
    for cut in range(len(stream) + 1):
        taken, at = parse_publishes(stream[:cut], 0, 10)
        whole = [end for end in ends if end <= cut]
        assert len(taken) == len(whole)
        assert at == (whole[-1] if whole else 0)


def test_parsing_starts_at_the_offset_and_stops_at_the_limit() -> None:
    """From ``start``, no more than ``limit`` packets; the offset is after the last taken."""
    packets = [_publish(TOPIC, bytes([i]), mid=i + 1) for i in range(5)]
    stream = PINGRESP + b"".join(packets)
    taken, at = parse_publishes(stream, len(PINGRESP), 3)
    assert [m for _, _, _, m in taken] == [1, 2, 3]
    assert at == len(PINGRESP) + sum(len(p) for p in packets[:3])
    assert parse_publishes(stream, at, 0) == ([], at)


@pytest.mark.parametrize(
    "odd",
    [
        PINGRESP,
        b"\x90\x04\x00\x01\x00\x01",  # SUBACK
        b"\x62\x02\x00\x01",  # PUBREL
        _publish(TOPIC, b"exactly once", qos=2),
        _publish(TOPIC, b"qos 3 is malformed", qos=3),
        b"\x32\xff\xff\xff\xff\x01" + b"\x00" * 8,  # a fifth remaining-length byte
        b"\x32\x02\x00\x00",  # too short for a topic, an id and properties
        _publish(b"parksense/\xff\xfe/telemetry", b"{}"),  # invalid UTF-8 topic
        _publish(b"", b"{}", properties=_properties(TopicAlias=3)),
        _publish(TOPIC, b"{}", properties=_properties(TopicAlias=3)),
        _publish(TOPIC, b"{}", properties=b"\x05\x11\x00\x00\x00\x01"),  # Session Expiry
        _publish(TOPIC, b"{}", properties=b"\x02\x80\x01"),  # unknown identifier
        _publish(TOPIC, b"{}", properties=b"\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01"),
        _publish(TOPIC, b"{}", properties=b"\x02\x01\x02"),  # payload format 2
        _publish(TOPIC, b"{}", properties=b"\x02\x0b\x00"),  # subscription identifier 0
        _publish(TOPIC, b"{}", properties=b"\x06\x03\x00\x03a\x00b"),  # NUL in a string
        _publish(TOPIC, b"{}", properties=b"\x06\x03\x00\x03\xef\xbb\xbf"),  # U+FEFF
        _publish(TOPIC, b"{}", properties=b"\x05\x03\x00\x02\xed\xa0"),  # half a surrogate
        _publish(TOPIC, b"{}", properties=b"\x03\x02\x00\x00"),  # expiry cut short
        _publish(TOPIC, b"", properties=b"\x7f"),  # properties past the packet's end
        _publish(TOPIC, b"", qos=0, properties=b""),  # no properties length at all
    ],
    ids=[
        "pingresp",
        "suback",
        "pubrel",
        "qos2",
        "qos3",
        "rl5",
        "short",
        "bad-topic",
        "alias-only",
        "alias",
        "not-for-publish",
        "unknown",
        "duplicate-expiry",
        "format-2",
        "subscription-0",
        "nul",
        "bom",
        "surrogate",
        "short-expiry",
        "long-properties",
        "no-properties-length",
    ],
)
def test_anything_unusual_is_left_for_paho_with_what_follows(odd: bytes) -> None:
    """Other packets, QoS 2 and whatever paho might read otherwise are not taken, nor after."""
    before = _publish(TOPIC, b"before", mid=1)
    after = _publish(TOPIC, b"after", mid=2)
    taken, at = parse_publishes(before + odd + after, 0, 10)
    assert taken == [(TOPIC, b"before", 1, 1)]
    assert at == len(before)


_PROPERTY_IDS = (0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26, 0x11, 0x1F, 0x7F, 0x80)


@st.composite
def _fuzzed_packets(draw: st.DrawFn) -> bytes:
    """PUBLISH-like packets: well formed, or with a property, a length or a byte gone wrong."""
    qos = draw(st.integers(0, 3))
    topic = draw(st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=12)))
    properties = b""
    for identifier in draw(st.lists(st.sampled_from(_PROPERTY_IDS), max_size=4)):
        value = draw(
            st.one_of(
                st.binary(max_size=6),
                st.text(max_size=4).map(lambda t: struct.pack("!H", len(t.encode())) + t.encode()),
            )
        )
        properties += bytes([identifier]) + value
    length = len(properties) + draw(st.sampled_from([0, 0, 0, -1, 1, 5]))
    packet = _publish(
        topic,
        draw(st.binary(max_size=20)),
        qos=qos,
        mid=draw(st.integers(0, 65535)),
        properties=_vbi(max(length, 0)) + properties,
        flags=draw(st.sampled_from([0, 1, 8, 9])),
    )
    if draw(st.booleans()):
        index = draw(st.integers(0, len(packet) - 1))
        packet = packet[:index] + bytes([draw(st.integers(0, 255))]) + packet[index + 1 :]
    return packet


@settings(max_examples=500, deadline=None)
@given(_fuzzed_packets())
def test_whatever_is_taken_is_what_paho_would_deliver(packet: bytes) -> None:
    """A packet taken is one paho reads without error, to the same message; never more."""
    taken, at = parse_publishes(packet, 0, 1)
    if not taken:
        assert at == 0
        return
    rc, via_paho = _through_paho(packet[:at])
    assert rc == mqtt.MQTT_ERR_SUCCESS
    assert via_paho == taken


def _v5_client_on(sock: _Chunks) -> _ReadAheadClient:
    client = _ReadAheadClient(
        CallbackAPIVersion.VERSION2,
        client_id="parksense.ingest.t",
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client._sock = sock  # type: ignore[assignment]  # a stand-in for the socket
    return client


def test_paho_and_the_fast_path_take_turns_in_stream_order() -> None:
    """PUBLISHes read ahead go at once, the rest through paho, every one once and in order."""
    packets = [_publish(TOPIC, f"m{i}".encode(), qos=i % 2, mid=i + 1) for i in range(6)]
    head, tail = packets[4][:9], packets[4][9:]
    # m0 m1 m2, a PINGRESP (paho's), m3 and the first bytes of m4 come in one read; the
    # rest of m4 (which paho then reads) and m5 in a second.
    sock = _Chunks([b"".join(packets[:3]) + PINGRESP + packets[3] + head, tail + packets[5]])
    client = _v5_client_on(sock)
    order: list[tuple[str, bytes]] = []
    client.on_message = lambda _c, _u, m: order.append(("paho", bytes(m.payload)))

    def deliver(batch: list[Publish]) -> None:
        assert client._in_callback_mutex.locked()  # as paho calls on_message
        order.extend(("fast", payload) for _, payload, _, _ in batch)

    client._ping_t = 1.0  # a PINGREQ is out: paho's PINGRESP handling clears this
    for _ in range(10):
        client._last_bytes_received = 0.0
        if client.read_publishes(100, deliver):
            assert client._last_bytes_received > 0.0  # keepalive: bytes came in
        elif client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
            break
    assert order == [
        ("fast", b"m0"),
        ("fast", b"m1"),
        ("fast", b"m2"),
        ("fast", b"m3"),
        ("paho", b"m4"),
        ("fast", b"m5"),
    ]
    assert client._ping_t == 0  # the PINGRESP between them went to paho
    assert not sock.chunks  # two reads of the socket brought all of it
    assert sock.asked[:2] == [_READ_AHEAD_BYTES, _READ_AHEAD_BYTES]


@pytest.mark.parametrize(
    "end", [b"", ConnectionResetError(104, "Connection reset by peer")], ids=["eof", "reset"]
)
def test_the_end_of_the_stream_met_reading_ahead_is_paho_s_to_handle(
    end: bytes | OSError,
) -> None:
    """A closed or failed connection found by the fast path's read reaches paho's next read."""
    sock = _Chunks([end, _publish(TOPIC, b"never read")])
    client = _v5_client_on(sock)
    assert client.read_publishes(100, lambda _batch: pytest.fail("nothing to take")) == 0
    assert client.loop_read() == mqtt.MQTT_ERR_CONN_LOST
    assert sock.asked == [_READ_AHEAD_BYTES]  # paho met what the fast path's read met


def test_a_read_ahead_that_would_block_leaves_nothing_behind() -> None:
    """With no bytes waiting, neither the fast path nor paho's read after it takes anything."""
    sock = _Chunks([])
    client = _v5_client_on(sock)
    assert client.read_publishes(100, lambda _batch: pytest.fail("nothing to take")) == 0
    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    sock.chunks.append(_publish(TOPIC, b"later"))
    taken: list[Publish] = []
    assert client.read_publishes(100, taken.extend) == 1
    assert taken == [(TOPIC, b"later", 1, 7)]


@pytest.mark.parametrize(
    "partial",
    [
        {"command": 0x32},
        {"command": 0x32, "have_remaining": 1, "remaining_count": [90], "to_process": 20},
        {"command": 0, "remaining_count": [0x80]},  # a first byte of 0, then a length byte
    ],
    ids=["first-byte", "body", "zero-first-byte"],
)
def test_nothing_is_taken_while_paho_holds_part_of_a_packet(partial: dict[str, Any]) -> None:
    """Mid-packet, the bytes read ahead are the rest of paho's packet, whatever they look like."""
    client = _v5_client_on(_Chunks([]))
    # The rest of paho's packet holds what looks like a whole PUBLISH.
    client._ahead, client._ahead_at, client._ahead_sock = (
        b"rest" + _publish(TOPIC, b"x"),
        4,
        client._sock,
    )
    client._in_packet.update(partial)  # type: ignore[typeddict-item]  # paho's own keys
    assert client.read_publishes(100, lambda _batch: pytest.fail("taken mid-packet")) == 0
    assert client._ahead_at == 4


def test_an_mqtt_3_connection_is_left_to_paho() -> None:
    """The parser reads MQTT 5 packets (properties); a 3.1.1 client's go paho's way."""
    client = _client_on(_Chunks([_publish(TOPIC, b"m0")]))
    assert client.read_publishes(100, lambda _batch: pytest.fail("MQTT 3.1.1")) == 0


def test_a_paused_consumer_drops_what_is_parsed_at_once() -> None:
    """After stop_receiving, fast-parsed messages are not handed on (nor acknowledged)."""
    loop = asyncio.new_event_loop()
    consumer = MqttConsumer(
        MqttSettings(), IngestSettings(client_id="parksense.ingest.t"), loop, lambda _m: None
    )
    try:
        consumer._on_publishes([(TOPIC, b"kept", 1, 1)])
        consumer.stop_receiving()
        consumer._on_publishes([(TOPIC, b"dropped", 1, 2)])
        assert [(m.payload, m.mid, m.epoch) for m in consumer._received] == [(b"kept", 1, 0)]
    finally:
        consumer._wake_r.close()
        consumer._wake_w.close()
        loop.close()


# --- The fast path against the real broker: ingest's consumer, in this process.


class _Consumer:
    """ingest's ``MqttConsumer`` whose loop keeps the test's messages, acks and frees at once."""

    def __init__(
        self, mosquitto: MosquittoBroker, client_id: str, prefix: str, **ingest: Any
    ) -> None:
        self.settings = platform_mqtt(
            MqttSettings(host=mosquitto.host, port=mosquitto.port), PlatformRole.INGEST
        )
        self.client_id = client_id
        self.prefix = prefix
        self.messages: list[RawMessage] = []
        self.taken = 0  # by the fast path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.consumer = MqttConsumer(
            self.settings,
            IngestSettings(client_id=client_id, **ingest),
            self.loop,
            self._deliver,
            registry_version=1,
        )
        client = self.consumer._client
        read_publishes = client.read_publishes

        def counted(limit: int, deliver: Any) -> int:
            taken = read_publishes(limit, deliver)
            self.taken += taken
            return taken

        client.read_publishes = counted  # type: ignore[method-assign]  # counts, changes nothing

    def _deliver(self, messages: list[RawMessage]) -> None:
        self.messages.extend(m for m in messages if f"/{self.prefix}-" in m.topic)
        self.consumer.ack([m.mid for m in messages if m.qos == 1], messages[0].epoch)
        self.consumer.release(len(messages))

    def start(self) -> None:
        self.thread.start()
        self.consumer.start()
        wait_until(lambda: self.consumer.subscribed_version == 1, 10, message="no SUBACK")

    def received(self) -> list[tuple[str, bytes, int]]:
        """The test's messages so far (a copy, taken on the loop's thread)."""
        return asyncio.run_coroutine_threadsafe(self._copy(), self.loop).result(10)

    async def _copy(self) -> list[tuple[str, bytes, int]]:
        return [(m.topic, m.payload, m.qos) for m in self.messages]

    def stop(self) -> None:
        self.consumer.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.consumer._wake_r.close()
        self.consumer._wake_w.close()

    def forget_session(self) -> None:
        client = mqtt_client(self.settings, self.client_id)
        client.connect(self.settings.host, self.settings.port, clean_start=True)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def consumers(mosquitto: MosquittoBroker) -> Iterator[Callable[..., _Consumer]]:
    """Consumers sharing one client id (one persistent session), removed afterwards."""
    prefix = unique_prefix()
    client_id = f"parksense.ingest.{prefix}"
    made: list[_Consumer] = []

    def make(**ingest: Any) -> _Consumer:
        consumer = _Consumer(mosquitto, client_id, prefix, **ingest)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        if consumer.thread.is_alive():
            consumer.stop()
    if made:
        made[0].forget_session()


def _sentinel_arrives(consumer: _Consumer, publisher: mqtt.Client, topic: str) -> None:
    """Publish a last message and wait for it: whatever came before it has arrived."""
    publisher.publish(topic, b"sentinel", qos=1).wait_for_publish(10)
    wait_until(lambda: (topic, b"sentinel", 1) in consumer.received(), 30, message="no sentinel")


def test_every_kind_of_publish_reaches_ingest_whole_once_and_in_order(
    consumers: Callable[..., _Consumer], mqtt_settings: MqttSettings
) -> None:
    """QoS 0 and 1, a UTF-8 topic, MQTT 5 properties, payloads over many reads: as sent."""
    consumer = consumers()
    consumer.start()
    base = f"parksense/v1/{consumer.prefix}-park/{consumer.prefix}-f1"
    publisher = mqtt_client(mqtt_settings)
    publisher.connect(mqtt_settings.host, mqtt_settings.port)
    publisher.loop_start()
    rng = random.Random(11)
    sent: list[tuple[str, bytes, int, Properties | None]] = [
        (f"{base}/d1/telemetry", b'{"n": 0}', 1, None),
        (f"{base}/传感器-温度/telemetry", "二十一度".encode(), 1, None),
        (f"{base}/d2/telemetry", rng.randbytes(300_000), 1, None),  # five reads and more
        (f"{base}/d3/telemetry", rng.randbytes(1_000_000), 1, None),  # near the broker's limit
    ]
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("gateway", "鹤壁-1"), ("firmware", "2.4")]
    properties.MessageExpiryInterval = 3600
    properties.ContentType = "application/json"
    for i in range(300):
        topic = f"{base}/d{i % 7}/telemetry" if i % 5 else f"{base}/设备-{i % 3}/telemetry"
        payload = orjson.dumps({"i": i, "pad": "x" * rng.randint(0, 2000)})
        sent.append((topic, payload, i % 2, properties if i % 3 == 0 else None))
    for topic, payload, qos, props in sent:
        # One at a time: QoS 0 is sent at once, QoS 1 waits for its PUBACK, so the broker
        # receives them in this order whatever paho's in-flight window.
        publisher.publish(topic, payload, qos=qos, properties=props).wait_for_publish(10)
    _sentinel_arrives(consumer, publisher, f"{base}/end/telemetry")
    expected = [(topic, payload, qos) for topic, payload, qos, _ in sent]
    assert consumer.received()[:-1] == expected
    assert consumer.taken > len(sent) // 2  # most went the fast way

    # Every QoS 1 message was acknowledged with its own packet id: nothing comes again.
    consumer.stop()
    again = consumers()
    again.start()
    _sentinel_arrives(again, publisher, f"{base}/again/telemetry")
    assert again.received() == [(f"{base}/again/telemetry", b"sentinel", 1)]
    publisher.disconnect()
    publisher.loop_stop()


def test_a_queued_burst_is_taken_many_packets_a_read_in_order(
    consumers: Callable[..., _Consumer], mqtt_settings: MqttSettings
) -> None:
    """Messages queued in the session arrive packed; each is handed on once, in order.

    Many packets a read, but never more taken than the buffer has slots for.
    """
    consumer = consumers()
    consumer.start()
    consumer.stop()  # the session keeps the subscription and queues for it
    base = f"parksense/v1/{consumer.prefix}-park/{consumer.prefix}-f1"
    messages = [(f"{base}/d{i % 20}/telemetry", b'{"seq": %d}' % i) for i in range(5000)]
    publish_concurrently(mqtt_settings, messages, publishers=1)
    again = consumers(max_buffered_messages=100)
    again.start()
    publisher = mqtt_client(mqtt_settings)
    publisher.connect(mqtt_settings.host, mqtt_settings.port)
    publisher.loop_start()
    _sentinel_arrives(again, publisher, f"{base}/end/telemetry")
    publisher.disconnect()
    publisher.loop_stop()
    assert again.received()[:-1] == [(topic, payload, 1) for topic, payload in messages]
    assert again.taken > 0.9 * len(messages)
    assert again.consumer._peak <= 100
