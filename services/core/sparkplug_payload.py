"""Sparkplug B on the wire: topics, bounded payload decoding, the Rebirth command.

``spBv1.0/{group}/{message_type}/{edge_node}[/{device}]``: in parksense the group is the
park, the edge node is the factory's gateway and the device is a registered device
(PRODUCT.md "Sparkplug B"). Payloads are the protobuf ``Payload`` of the Sparkplug 3.0
specification (``schemas/sparkplug_b.proto``); a payload is refused before it is parsed
when it is larger than the JSON contract's limit, and after parsing when it holds more
metrics than a JSON message may hold samples, so no one message costs more than a JSON
one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from google.protobuf.message import DecodeError

from schemas.sparkplug_b_pb2 import Payload
from schemas.telemetry import ID_PATTERN, MAX_PAYLOAD_BYTES, MAX_SAMPLES_PER_MESSAGE
from services.core.decode import DecodeFailure
from services.core.readings import MessageOutcome, RejectReason, refused_message
from services.core.text import shown

NAMESPACE = "spBv1.0"
_NAMESPACE_PREFIX = f"{NAMESPACE}/"  # ingest asks of every message
# A payload is refused unparsed above this size: the JSON contract's limit.
MAX_SPARKPLUG_BYTES = MAX_PAYLOAD_BYTES
# Metrics one payload may carry, as many as a JSON message may carry samples.
MAX_METRICS = MAX_SAMPLES_PER_MESSAGE
# Sparkplug's sequence numbers count 0..255 and wrap [tck-id-payloads-sequence-num-incrementing].
SEQ_MODULUS = 256
# The metric of an NBIRTH/NDEATH that pairs a birth with its death.
BD_SEQ_METRIC = "bdSeq"
# The metric of an NCMD that asks an edge node to publish its births again.
REBIRTH_METRIC = "Node Control/Rebirth"
# Metrics under these prefixes are the specification's controls, not measurements.
CONTROL_PREFIXES = ("Node Control/", "Device Control/")

_ID = re.compile(ID_PATTERN)


class MessageType(StrEnum):
    """The Sparkplug message types; the ``N*`` ones are the edge node's, ``D*`` a device's."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        """Whether the topic names a device after the edge node."""
        return self.value.startswith("D")

    @property
    def is_command(self) -> bool:
        """Whether hosts send this type (parksense itself publishes NCMD)."""
        return self in {MessageType.NCMD, MessageType.DCMD}


class DataType(IntEnum):
    """The Sparkplug B scalar data types parksense reads (specification section 6.4.16)."""

    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15


# Signed integers travel as their two's complement in an unsigned field of this many bits.
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_KNOWN_TYPES = frozenset(int(t) for t in DataType)


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """The ids a Sparkplug topic names."""

    park_id: str
    message_type: MessageType
    factory_id: str
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload, its value as the wire field holds it."""

    name: str | None
    alias: int | None
    ts_ms: int | None
    datatype: int | None
    value: float | int | bool | str | bytes | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded Sparkplug message, not yet judged against the edge node's state."""

    topic: str
    address: SparkplugTopic
    ts_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]
    payload: bytes
    received_at: datetime


def is_sparkplug_topic(topic: str) -> bool:
    """Whether ``topic`` lies in the Sparkplug B namespace."""
    return topic.startswith(_NAMESPACE_PREFIX)


def is_host_topic(topic: str) -> bool:
    """Whether hosts, not edge nodes, publish on ``topic``: commands and host state.

    Ingest receives its own Rebirth requests and other hosts' ``STATE`` under its
    subscription; they are no device's data, so they are neither stored nor dead-lettered.
    """
    parts = topic.split("/")
    if len(parts) > 1 and parts[1] == "STATE":
        return True
    return len(parts) > 2 and parts[2] in {MessageType.NCMD.value, MessageType.DCMD.value}  # noqa: PLR2004


def parse_sparkplug_topic(topic: str) -> SparkplugTopic | None:
    """Return the address a Sparkplug topic names, or None when it is not one parksense reads."""
    parts = topic.split("/")
    if len(parts) not in {4, 5} or parts[0] != NAMESPACE:
        return None
    try:
        message_type = MessageType(parts[2])
    except ValueError:
        return None
    ids = (parts[1], parts[3], *parts[4:])
    if len(parts) != (5 if message_type.is_device else 4) or not all(
        _ID.fullmatch(part) for part in ids
    ):
        return None
    device_id = parts[4] if message_type.is_device else None
    return SparkplugTopic(parts[1], message_type, parts[3], device_id)


def read_frame(topic: str, payload: bytes, received_at: datetime) -> Frame | MessageOutcome:
    """Decode a message on a Sparkplug topic, or say why it is refused (or ignored).

    A host's own topics (commands, ``STATE``) turn into nothing: acknowledged, neither
    stored nor dead-lettered.
    """
    if is_host_topic(topic):
        return MessageOutcome()
    address = parse_sparkplug_topic(topic)
    if address is None:
        return refused_message(
            RejectReason.BAD_TOPIC,
            f"not {NAMESPACE}/{{park}}/{{N|D}}{{BIRTH|DEATH|DATA}}/{{factory}}[/{{device}}]"
            f" with valid ids: {shown(topic)}",
            topic,
            payload,
            received_at,
        )
    frame = decode_frame(topic, address, payload, received_at)
    if isinstance(frame, DecodeFailure):
        return refused_message(frame.reason, frame.detail, topic, payload, received_at, address)
    return frame


def decode_frame(
    topic: str, address: SparkplugTopic, payload: bytes, received_at: datetime
) -> Frame | DecodeFailure:
    """Decode a payload, refusing it unparsed when too large and parsed when too many metrics."""
    if len(payload) > MAX_SPARKPLUG_BYTES:
        return DecodeFailure(
            RejectReason.OVERSIZE, f"payload is {len(payload)} bytes, limit {MAX_SPARKPLUG_BYTES}"
        )
    message = Payload()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        return DecodeFailure(RejectReason.MALFORMED_PROTOBUF, f"not a Sparkplug B payload: {exc}")
    if len(message.metrics) > MAX_METRICS:
        return DecodeFailure(
            RejectReason.TOO_MANY_METRICS, f"{len(message.metrics)} metrics, limit {MAX_METRICS}"
        )
    return Frame(
        topic=topic,
        address=address,
        ts_ms=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=tuple(_metric(m) for m in message.metrics),
        payload=payload,
        received_at=received_at,
    )


def _metric(metric: Payload.Metric) -> Metric:
    field = metric.WhichOneof("value")
    value: float | int | bool | str | bytes | None = None
    if field is not None and not metric.is_null:
        value = getattr(metric, field)
    return Metric(
        name=metric.name if metric.HasField("name") else None,
        alias=metric.alias if metric.HasField("alias") else None,
        ts_ms=metric.timestamp if metric.HasField("timestamp") else None,
        datatype=metric.datatype if metric.HasField("datatype") else None,
        value=value,
    )


def metric_value(
    raw: float | bool | str | bytes | None, datatype: int | None
) -> float | int | bool | str | bytes | None:
    """The value a metric means, given its data type (signed integers are two's complement)."""
    bits = _SIGNED_BITS.get(DataType(datatype)) if datatype in _KNOWN_TYPES else None
    if bits is not None and isinstance(raw, int) and not isinstance(raw, bool):
        raw %= 1 << bits
        return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
    return raw


def rebirth_command(now_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its births again."""
    message = Payload(timestamp=now_ms)
    message.metrics.add(
        name=REBIRTH_METRIC, timestamp=now_ms, datatype=DataType.BOOLEAN, boolean_value=True
    )
    return message.SerializeToString()


def rebirth_topic(park_id: str, factory_id: str) -> str:
    """The topic of the Rebirth request to a park's factory gateway."""
    return f"{NAMESPACE}/{park_id}/{MessageType.NCMD.value}/{factory_id}"
