"""Device → broker payloads: the versioned MQTT wire contract (topic version ``v1``).

The simulator builds its payloads with these models and the ingest service judges incoming
payloads against the same limits, so the contract has one source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer

TOPIC_VERSION = "v1"
TOPIC_ROOT = f"parksense/{TOPIC_VERSION}"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SAMPLES_PER_MESSAGE = 1000

MetricValue = float | int | str | bool
DeviceId = Annotated[str, Field(pattern=ID_PATTERN)]


def format_ts(ts: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with millisecond precision and a ``Z``."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TelemetrySample(BaseModel):
    """One sample: a measured time, an optional sequence number and a set of metric values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: datetime | int = Field(description="RFC 3339 with offset, or integer epoch milliseconds")
    seq: int | None = Field(default=None, ge=0)
    metrics: dict[str, MetricValue] = Field(min_length=1)

    @field_serializer("ts")
    def _serialize_ts(self, ts: datetime | int) -> str | int:
        return format_ts(ts) if isinstance(ts, datetime) else ts


class StatusMessage(BaseModel):
    """A device's online state: retained on connect, and its last will with ``online: false``.

    A last will is composed when the device connects, long before it takes effect, so it
    should carry no ``ts``: ingest then dates it at receipt.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    online: bool
    ts: datetime | int | None = None

    @field_serializer("ts")
    def _serialize_ts(self, ts: datetime | int | None) -> str | int | None:
        return format_ts(ts) if isinstance(ts, datetime) else ts


def telemetry_topic(park_id: str, factory_id: str, device_id: str) -> str:
    """Return the telemetry topic of one device."""
    return f"{TOPIC_ROOT}/{park_id}/{factory_id}/{device_id}/telemetry"


def status_topic(park_id: str, factory_id: str, device_id: str) -> str:
    """Return the status topic of one device."""
    return f"{TOPIC_ROOT}/{park_id}/{factory_id}/{device_id}/status"


def encode_samples(samples: list[TelemetrySample]) -> bytes:
    """Encode one sample as an object, or several as a store-and-forward array."""
    if len(samples) == 1:
        return orjson.dumps(samples[0].model_dump(mode="json", exclude_none=True))
    return orjson.dumps([s.model_dump(mode="json", exclude_none=True) for s in samples])


def encode_status(status: StatusMessage) -> bytes:
    """Encode a status message (without ``ts`` when it has none)."""
    return orjson.dumps(status.model_dump(mode="json", exclude_none=True))
