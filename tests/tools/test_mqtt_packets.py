"""Tests of the hand-built MQTT 3.1.1 packets of bench-peers."""

from __future__ import annotations

import struct

import pytest

from tools.mqtt_packets import (
    CONNACK,
    DISCONNECT,
    PUBACK,
    PUBLISH_QOS1,
    Packet,
    PacketError,
    PacketReader,
    connack_code,
    connect_packet,
    encode_remaining_length,
    packet_id_of,
    puback_id,
    publish_packet,
)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_spec_examples(length, encoded):
    """The variable-length encoding matches the table of MQTT 3.1.1 section 2.2.3."""
    assert encode_remaining_length(length) == encoded


def test_remaining_length_beyond_four_bytes_is_refused():
    """A length that four bytes cannot hold is refused."""
    with pytest.raises(PacketError):
        encode_remaining_length(268_435_456)


def test_connect_carries_credentials_and_session_flag():
    """CONNECT holds protocol level 4, the flags, keep-alive, client id, username, password."""
    packet = connect_packet("c.1", username="u", password="pw", keep_alive_s=120)  # noqa: S106 - a test value
    body = b"\x00\x04MQTT\x04\xc2\x00\x78" + b"\x00\x03c.1" + b"\x00\x01u" + b"\x00\x02pw"
    assert packet == b"\x10" + bytes([len(body)]) + body


def test_connect_without_clean_session_keeps_the_session():
    """A persistent-session CONNECT has the clean-session flag off."""
    packet = connect_packet("c", clean_session=False)
    assert packet[9] == 0x00


def test_password_without_username_is_refused():
    """MQTT 3.1.1 has no password without a username (section 3.1.2.9)."""
    with pytest.raises(PacketError):
        connect_packet("c", password="pw")  # noqa: S106 - a test value


def test_publish_is_qos1_with_topic_packet_id_and_payload():
    """PUBLISH holds the topic, the packet id and the payload, after a QoS 1 fixed header."""
    packet = publish_packet("a/b", b'{"x":1}', 513)
    [parsed] = PacketReader().feed(packet)
    assert packet[0] == PUBLISH_QOS1
    assert parsed.body == b"\x00\x03a/b" + struct.pack("!H", 513) + b'{"x":1}'


@pytest.mark.parametrize("packet_id", [0, 65_536])
def test_publish_refuses_packet_ids_out_of_range(packet_id):
    """Packet ids lie within [1, 65535] (section 2.3.1)."""
    with pytest.raises(PacketError):
        publish_packet("t", b"", packet_id)


@pytest.mark.parametrize(("index", "packet_id"), [(0, 1), (65_534, 65_535), (65_535, 1)])
def test_packet_ids_cycle_and_skip_zero(index, packet_id):
    """Message ids run from 1 to 65535 and start again, never 0."""
    assert packet_id_of(index) == packet_id


def test_reader_splits_packets_however_the_bytes_are_cut():
    """Packets cut across reads, or several in one read, come out whole and in order."""
    stream = b"\x20\x02\x00\x00" + b"\x40\x02\x00\x07" + b"\x40\x02\x01\x00" + DISCONNECT
    reader = PacketReader()
    packets: list[Packet] = []
    for i in range(0, len(stream), 3):
        packets += reader.feed(stream[i : i + 3])
    assert [p.kind for p in packets] == [CONNACK, PUBACK, PUBACK, 0xE0]
    assert connack_code(packets[0]) == 0
    assert [puback_id(p) for p in packets[1:3]] == [7, 256]


def test_reader_handles_multi_byte_lengths():
    """A packet longer than 127 bytes is read with its two-byte length."""
    packet = publish_packet("t", b"x" * 300, 1)
    assert PacketReader().feed(packet)[0].body.endswith(b"x" * 300)


def test_connack_refusal_code_is_returned():
    """A refused CONNACK carries its return code (5: not authorized)."""
    [packet] = PacketReader().feed(b"\x20\x02\x00\x05")
    assert connack_code(packet) == 5


def test_an_unexpected_packet_is_not_taken_for_a_puback():
    """Reading a PUBACK id from another packet type is an error."""
    [packet] = PacketReader().feed(b"\x20\x02\x00\x00")
    with pytest.raises(PacketError):
        puback_id(packet)
