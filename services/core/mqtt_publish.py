"""MQTT 5 PUBLISH packets read straight from received bytes: ingest's fast path.

paho's generic path costs some 60 us a message (a read per header byte, a dict per packet,
Properties objects); ``parse_publishes`` takes whole QoS 0/1 PUBLISH packets from the bytes
ingest's client has read ahead, and leaves anything else to paho
(``services/ingest/mqtt.py``). Pure: bytes in, packets out. Section numbers are the MQTT
5.0 specification's.
"""

from __future__ import annotations

# Fast path (``parse_publishes``): the fixed header's packet type of a PUBLISH (§2.1.2).
_PUBLISH = 0x30
# PUBLISH properties (§3.3.2.3) the fast path steps over, by identifier, with the shape of
# their values (§2.2.2.2): Payload Format Indicator, Message Expiry Interval, Content
# Type, Response Topic, Correlation Data, Subscription Identifier, User Property. Topic
# Alias (0x23) is not here: the topic would have to come from an alias, so paho decides.
_BYTE, _FOUR_BYTES, _STRING, _BINARY, _VARIABLE, _STRING_PAIR = range(6)
_SKIPPED_PROPERTIES = {
    0x01: _BYTE,
    0x02: _FOUR_BYTES,
    0x03: _STRING,
    0x08: _STRING,
    0x09: _BINARY,
    0x0B: _VARIABLE,
    0x26: _STRING_PAIR,
}
# Properties that may appear more than once in one packet (§3.3.2.3.8, §3.3.2.3.7).
_REPEATABLE_PROPERTIES = frozenset({0x0B, 0x26})


# A PUBLISH the fast path parsed: topic, payload, QoS, packet id (0 at QoS 0).
Publish = tuple[str, bytes, int, int]


def parse_publishes(buffer: bytes, start: int, limit: int) -> tuple[list[Publish], int]:
    """Parse up to ``limit`` whole QoS 0/1 MQTT 5 PUBLISH packets from ``buffer[start:]``.

    It stops at the first packet it does not take whole, and leaves it (and everything
    after it) to paho: another packet type, QoS 2, a packet that does not end in
    ``buffer``, a remaining length or topic that paho would refuse or decode differently
    (more than 4 length bytes, invalid UTF-8, an empty topic), a Topic Alias or any
    property it does not know (``_SKIPPED_PROPERTIES``) or that paho would refuse. What
    it takes, paho would take with the same topic, payload, QoS and packet id. Properties
    are skipped: ingest uses none.

    Returns:
        The packets taken, in order, and the offset just after the last one.
    """
    taken: list[Publish] = []
    size = len(buffer)
    at = start
    while len(taken) < limit and at < size:
        header = buffer[at]
        qos = (header >> 1) & 3
        if header & 0xF0 != _PUBLISH or qos > 1:
            break
        # Remaining length (§2.1.4): -1 when not all here, or a fifth byte (paho refuses).
        length, body = _variable_integer(buffer, at + 1, size)
        end = body + length
        # Topic length, topic, packet id (QoS 1) and at least the properties length.
        if length < 3 + 2 * qos or end > size:
            break
        topic_end = body + 2 + ((buffer[body] << 8) | buffer[body + 1])
        properties = topic_end + 2 * qos
        if topic_end == body + 2 or properties >= end:
            break
        mid = (buffer[topic_end] << 8) | buffer[topic_end + 1] if qos else 0
        try:
            topic = buffer[body + 2 : topic_end].decode()
        except UnicodeDecodeError:
            break
        if buffer[properties] == 0:  # no properties, as nearly always
            payload_at = properties + 1
        else:
            payload_at = _skip_properties(buffer, properties, end)
            if payload_at < 0:
                break
        taken.append((topic, buffer[payload_at:end], qos, mid))
        at = end
    return taken, at


def _skip_properties(buffer: bytes, at: int, end: int) -> int:
    """Return where the payload starts after the properties at ``at``; -1: leave to paho."""
    length, at = _variable_integer(buffer, at, end)
    if length < 0 or at + length > end:
        return -1
    stop = at + length
    seen: set[int] = set()
    while at < stop:
        identifier = buffer[at]
        kind = _SKIPPED_PROPERTIES.get(identifier)
        if kind is None or identifier in seen:
            return -1
        if identifier not in _REPEATABLE_PROPERTIES:
            seen.add(identifier)
        at = _skip_value(buffer, kind, at + 1, stop)
        if at < 0:
            return -1
    return stop


def _skip_value(buffer: bytes, kind: int, at: int, stop: int) -> int:
    """Step over a property value of ``kind`` (§2.2.2.2) paho accepts; -1 if it is not one."""
    if kind == _BYTE:
        # Payload Format Indicator: 0 or 1, else paho refuses the packet.
        at = at + 1 if at < stop and buffer[at] <= 1 else -1
    elif kind == _FOUR_BYTES:
        at += 4
    elif kind == _VARIABLE:
        value, at = _variable_integer(buffer, at, stop)
        at = at if value > 0 else -1  # Subscription Identifier: 1 to 268,435,455
    elif kind == _BINARY:
        at = at + 2 + ((buffer[at] << 8) | buffer[at + 1]) if at + 2 <= stop else -1
    else:
        at = _skip_string(buffer, at, stop)
        if kind == _STRING_PAIR and at >= 0:
            at = _skip_string(buffer, at, stop)
    return at if at <= stop else -1


def _skip_string(buffer: bytes, at: int, stop: int) -> int:
    """Step over a UTF-8 string (§1.5.4) paho accepts; -1 if it is not one."""
    if at + 2 > stop:
        return -1
    end = at + 2 + ((buffer[at] << 8) | buffer[at + 1])
    if end > stop:
        return -1
    try:
        text = buffer[at + 2 : end].decode()  # strict: surrogates are refused too
    except UnicodeDecodeError:
        return -1
    # paho refuses NUL [MQTT-1.5.4-2] and U+FEFF [MQTT-1.5.4-3] in a property string.
    return -1 if "\x00" in text or "\ufeff" in text else end


def _variable_integer(buffer: bytes, at: int, stop: int) -> tuple[int, int]:
    """Read a Variable Byte Integer (§1.5.5) of at most 4 bytes: (value, next); -1 if none."""
    value = 0
    for shift in (0, 7, 14, 21):
        if at >= stop:
            return -1, at
        byte = buffer[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    return -1, at
