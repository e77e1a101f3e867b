"""API response models (what downstream services rely on; fields are added, never renamed)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ParkSummary(_Out):
    """A park in the list of parks."""

    park_id: str
    name: str
    name_zh: str = Field(default="", description="Chinese name; empty when the fleet has none")
    city: str
    factories: int
    devices: int


class ParkSummaries(_Out):
    """The list of parks."""

    data: list[ParkSummary]
    count: int


class DeviceSummary(_Out):
    """A device inside a park's detail."""

    device_id: str
    type: str
    capacity_units_per_hour: float | None = None


class FactoryDetail(_Out):
    """A factory inside a park's detail."""

    factory_id: str
    name: str
    name_zh: str = Field(default="", description="Chinese name; empty when the fleet has none")
    industry: str
    devices: list[DeviceSummary]


class ParkDetail(_Out):
    """One park with its factories and devices."""

    park_id: str
    name: str
    name_zh: str = Field(default="", description="Chinese name; empty when the fleet has none")
    city: str
    factories: list[FactoryDetail]


class LatestValue(_Out):
    """A metric's latest value and when it was measured."""

    ts: datetime
    value: float | str | None


class DeviceLatest(_Out):
    """A device's latest value of each metric."""

    device_id: str
    park_id: str
    factory_id: str
    type: str
    online: bool
    last_seen: datetime | None
    status_reason: str | None = Field(
        default=None,
        description="What last announced the device's state: a status message (`status`),"
        " a Sparkplug B birth (`birth`) or death (`death`); null when nothing has",
    )
    metrics: dict[str, LatestValue]


class Point(_Out):
    """One point of a series; a bucket's ``ts`` is its start."""

    ts: datetime
    value: float | str | None


class Readings(_Out):
    """A device's readings of one metric, raw or time-bucketed."""

    device_id: str
    metric: str
    bucket: str | None
    agg: str | None
    start: datetime
    end: datetime
    points: list[Point]


class FleetLoaded(_Out):
    """What a fleet load wrote."""

    version: int
    parks: int
    factories: int
    devices: int
    device_types: int


class IssuedCredential(_Out):
    """An MQTT credential as issued; the password is shown this once."""

    username: str = Field(examples=["device.f01-meter-1"])
    password: str
    client_id_prefix: str = Field(
        description="every client id of this credential must start with it",
        examples=["device.f01-meter-1."],
    )
    topics: list[str] = Field(
        description="the topics (or filters) it may publish to, or a reader's subscription",
    )


class DeadLetter(_Out):
    """The refusals of one reason in one refused message.

    A message is stored once; each reason refused in it is one entry, counting how many
    readings (or samples, or whole messages) it refused and naming the first metrics.
    """

    id: int
    received_at: datetime
    reason: str
    detail: str = Field(description="why, for the first refusal of the entry (bounded)")
    topic: str
    park_id: str | None
    device_id: str | None
    metric: str | None = Field(description="the (first) refused metric, when it names one")
    ts: datetime | None = Field(description="measured time of the (first) refused sample")
    payload: str | None = Field(
        description="the refused message as it arrived (UTF-8, or base64 when binary)"
    )
    payload_encoding: str | None = Field(description="'utf-8' or 'base64'")
    message_id: int = Field(description="the refused message; its entries share it")
    refused: int = Field(
        description="refusals in this entry: readings, samples, or 1 for a whole message"
    )
    metrics: list[str] = Field(description="the first refused metric names (at most 16)")


class DeadLetters(_Out):
    """A page of dead letters, newest first."""

    data: list[DeadLetter]
    count: int


class Health(_Out):
    """Liveness or readiness."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ParkDelivery(_Out):
    """Delivery accounting of one park: what arrived, what was stored, what was refused."""

    park_id: str
    start: datetime
    end: datetime
    readings_accepted: int = Field(description="readings that passed validation (by receipt)")
    readings_stored: int = Field(description="readings inserted (accepted minus duplicates)")
    duplicates: int = Field(description="readings delivered again and not stored twice")
    refused: dict[str, int] = Field(description="dead letters by reason")
    refused_total: int
    devices_registered: int
    devices_reporting: int = Field(description="devices with readings measured in the interval")
    silent_devices: list[str] = Field(description="registered devices with no reading (≤ 100)")
