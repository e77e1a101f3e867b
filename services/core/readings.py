"""Internal values that flow through ingest: readings, status updates and rejections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol


class RejectReason(StrEnum):
    """Why a reading or message was refused; stored with every dead letter."""

    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    INVALID_PAYLOAD = "invalid_payload"
    TOO_MANY_SAMPLES = "too_many_samples"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    TOPIC_MISMATCH = "topic_mismatch"
    INVALID_TIMESTAMP = "invalid_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_KIND = "wrong_kind"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_STATE = "unknown_state"
    UNSTORABLE_TEXT = "unstorable_text"
    STORAGE_REJECTED = "storage_rejected"
    # Sparkplug B (services/core/sparkplug.py)
    MALFORMED_PROTOBUF = "malformed_protobuf"
    TOO_MANY_METRICS = "too_many_metrics"
    SEQ_GAP = "seq_gap"
    UNKNOWN_ALIAS = "unknown_alias"


class StatusReason(StrEnum):
    """What moved a device's announced online state."""

    STATUS = "status"  # a status message (or its last will)
    BIRTH = "birth"  # a Sparkplug DBIRTH
    DEATH = "death"  # a Sparkplug DDEATH, or the NDEATH of its gateway


class Reading(NamedTuple):
    """One accepted reading: a state metric carries ``text``, every other kind ``value``.

    A named tuple rather than a frozen dataclass: ingest makes one per stored reading, and
    a frozen dataclass's ``__init__`` (one ``object.__setattr__`` a field) costs about three
    times as much. The fields are in the column order of ``readings``: the writer COPYs a
    reading as it is.
    """

    device_id: str
    metric: str
    ts: datetime
    value: float | None
    text: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A device's announced online state at a measured time."""

    device_id: str
    online: bool
    ts: datetime
    received_at: datetime
    reason: StatusReason = StatusReason.STATUS


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused reading, sample or message, on its way to the dead letters.

    ``payload`` is the whole message as it arrived, shared by every rejection of that
    message (the dead letter stores it once, see ``services/core/deadletters.py``).
    """

    reason: RejectReason
    detail: str
    topic: str
    received_at: datetime
    payload: bytes | None = None
    park_id: str | None = None
    device_id: str | None = None
    metric: str | None = None
    ts: datetime | None = None


class MessageOutcome(NamedTuple):
    """Everything one MQTT message turned into (a named tuple, as ``Reading``)."""

    readings: tuple[Reading, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    status: StatusUpdate | None = None

    @property
    def rows(self) -> int:
        """Rows this message adds to a batch (at least one, so empty messages still count)."""
        return max(1, len(self.readings) + len(self.rejections))


class Addressed(Protocol):
    """What a parsed topic tells about where a message belongs."""

    @property
    def park_id(self) -> str:
        """The park the topic names."""
        ...

    @property
    def device_id(self) -> str | None:
        """The device the topic names, if it names one."""
        ...


def refused_message(
    reason: RejectReason,
    detail: str,
    topic: str,
    payload: bytes,
    received_at: datetime,
    address: Addressed | None = None,
) -> MessageOutcome:
    """Return the outcome of a message refused whole, with the ids its topic gave."""
    rejection = Rejection(
        reason=reason,
        detail=detail,
        topic=topic,
        received_at=received_at,
        payload=payload,
        park_id=address.park_id if address else None,
        device_id=address.device_id if address else None,
    )
    return MessageOutcome(rejections=(rejection,))
