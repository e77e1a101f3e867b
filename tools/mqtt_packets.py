"""MQTT 3.1.1 packets built and parsed by hand, so the benchmark's publisher costs next to nothing.

Only what the publisher needs: CONNECT with username and password, QoS 1 PUBLISH,
DISCONNECT, and reading CONNACK and PUBACK from the byte stream (MQTT 3.1.1, OASIS
standard, section 2 for the fixed header and section 3 for each packet). MQTT 3.1.1 rather
than 5: Mosquitto announces a Receive Maximum of 20 to MQTT 5 clients (section 3.2.2.3.3),
while the benchmark keeps up to 2,000 messages unacknowledged on one connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_LEVEL_311 = 4
CONNECT = 0x10
CONNACK = 0x20
PUBLISH_QOS1 = 0x32  # PUBLISH, DUP 0, QoS 1, RETAIN 0 (section 3.3.1)
PUBACK = 0x40
DISCONNECT = b"\xe0\x00"
# CONNECT flags (section 3.1.2.3): username, password, clean session.
FLAG_USERNAME = 0x80
FLAG_PASSWORD = 0x40
FLAG_CLEAN_SESSION = 0x02
# The remaining length is at most four bytes of 7 bits (section 2.2.3).
MAX_REMAINING_LENGTH = 268_435_455
MAX_PACKET_ID = 65_535


class PacketError(ValueError):
    """A packet cannot be built, or the broker sent something the publisher does not expect."""


def encode_remaining_length(length: int) -> bytes:
    """Return the variable-length encoding of ``length`` (section 2.2.3)."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise PacketError(f"remaining length {length} is out of range")
    out = bytearray()
    while True:
        digit, length = length % 128, length // 128
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_PACKET_ID:
        raise PacketError("a string field holds at most 65,535 bytes")
    return struct.pack("!H", len(raw)) + raw


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    keep_alive_s: int = 60,
    clean_session: bool = True,
) -> bytes:
    """Return a CONNECT packet (section 3.1)."""
    flags = FLAG_CLEAN_SESSION if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= FLAG_USERNAME
        payload += _string(username)
    if password is not None:
        if username is None:
            raise PacketError("a password needs a username in MQTT 3.1.1")
        flags |= FLAG_PASSWORD
        payload += _string(password)
    body = _string("MQTT") + bytes([PROTOCOL_LEVEL_311, flags]) + struct.pack("!H", keep_alive_s)
    body += payload
    return bytes([CONNECT]) + encode_remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """Return a QoS 1 PUBLISH packet (section 3.3); ``packet_id`` is within [1, 65535]."""
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise PacketError(f"packet id {packet_id} is out of range")
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return bytes([PUBLISH_QOS1]) + encode_remaining_length(len(body)) + body


def packet_id_of(index: int) -> int:
    """Return the packet id of the ``index``-th message (from 0): 1 to 65535, then again.

    Reuse is safe while fewer than 65,535 messages are unacknowledged (section 2.3.1).
    """
    return index % MAX_PACKET_ID + 1


@dataclass(frozen=True, slots=True)
class Packet:
    """One control packet read from the broker: its first byte and its body."""

    kind: int
    flags: int
    body: bytes


class PacketReader:
    """Splits the bytes a broker sends into packets, however the reads cut them."""

    def __init__(self) -> None:
        """Start with nothing buffered."""
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return the packets it completes, in order."""
        self._buffer += data
        packets: list[Packet] = []
        while True:
            parsed = _parse_one(self._buffer)
            if parsed is None:
                return packets
            packet, used = parsed
            del self._buffer[:used]
            packets.append(packet)


def _parse_one(buffer: bytearray) -> tuple[Packet, int] | None:
    if len(buffer) < 2:  # noqa: PLR2004 - fixed header: type byte and one length byte
        return None
    length, multiplier, pos = 0, 1, 1
    while True:
        if pos >= len(buffer):
            return None
        digit = buffer[pos]
        length += (digit & 0x7F) * multiplier
        pos += 1
        if not digit & 0x80:
            break
        multiplier *= 128
        if pos > 4:  # noqa: PLR2004 - at most four length bytes (section 2.2.3)
            raise PacketError("malformed remaining length")
    if len(buffer) < pos + length:
        return None
    first = buffer[0]
    return Packet(first & 0xF0, first & 0x0F, bytes(buffer[pos : pos + length])), pos + length


def connack_code(packet: Packet) -> int:
    """Return the return code of a CONNACK (section 3.2.2.3; 0 is accepted)."""
    if packet.kind != CONNACK or len(packet.body) != 2:  # noqa: PLR2004 - fixed size
        raise PacketError(f"expected CONNACK, got packet type {packet.kind >> 4}")
    return packet.body[1]


def puback_id(packet: Packet) -> int:
    """Return the packet id a PUBACK acknowledges (section 3.4)."""
    if packet.kind != PUBACK or len(packet.body) < 2:  # noqa: PLR2004 - packet id
        raise PacketError(f"expected PUBACK, got packet type {packet.kind >> 4}")
    return int(struct.unpack_from("!H", packet.body)[0])
