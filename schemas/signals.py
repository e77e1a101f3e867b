"""API models of the park and city signals, their history, park metrics and availability."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

_EXAMPLE_SIGNALS: dict[str, JsonValue] = {
    "online_rate": 0.625,
    "operating_rate": 0.5,
    "capacity_utilization": 0.6667,
    "power_kw": 150.0,
    "energy_kwh": 20.0,
    "energy_intensity_kwh_per_unit": 0.2,
    "alarm_rate": 0.2,
    "health_index": 63.3,
}
_EXAMPLE_COMPONENTS: dict[str, JsonValue] = {
    "operating_rate": {"weight": 0.3, "value": 0.5, "points": 15.0},
    "capacity_utilization": {"weight": 0.25, "value": 0.6667, "points": 16.67},
    "online_rate": {"weight": 0.25, "value": 0.625, "points": 15.63},
    "no_alarm": {"weight": 0.2, "value": 0.8, "points": 16.0},
}
_EXAMPLE_COVERAGE: dict[str, JsonValue] = {
    "online_rate": {"devices": 8, "reporting": 7, "share": 0.875},
    "capacity_utilization": {"devices": 2, "reporting": 2, "share": 1.0},
}
_EXAMPLE_COUNTS: dict[str, JsonValue] = {
    "devices_registered": 8,
    "devices_online": 5,
    "offline_no_data": 1,
    "offline_silence": 1,
    "offline_last_will": 1,
    "factories": 3,
    "factories_with_lines": 2,
    "factories_operating": 1,
    "lines": 2,
    "lines_online": 1,
    "lines_running": 1,
    "lines_in_fault": 0,
    "line_capacity_units_per_hour": 1800.0,
    "output_units_increase": 100.0,
    "meters": 2,
    "meters_online": 2,
    "energy_kwh_increase": 20.0,
    "devices_in_alarm": 1,
    "factories_scheduled": 2,
    "scheduled_fraction_of_window": 1.0,
    "capacity_units_off_shift": 0.0,
}
_EXAMPLE_BUCKET_COUNTS: dict[str, JsonValue] = {
    "minutes": 60,
    "device_minutes_registered": 480,
    "device_minutes_online": 300,
    "factory_minutes_with_lines": 120,
    "factory_minutes_scheduled": 120,
    "factory_minutes_operating": 60,
    "line_minutes_running": 60,
    "line_capacity_units": 1800.0,
    "output_units_increase": 1200.0,
    "meter_minutes_reporting": 120,
    "power_kw_minutes": 14400.0,
    "energy_kwh_increase": 240.0,
    "device_minutes_in_alarm": 15,
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SignalValues(_Out):
    """The signals of PRODUCT.md's table; ratios are fractions, not percentages."""

    online_rate: float = Field(description="devices online / devices registered")
    operating_rate: float | None = Field(
        description="factories with a running, online line / factories with lines scheduled"
        " at as_of; null when factories have lines but none is scheduled"
    )
    capacity_utilization: float | None = Field(
        description="output increase / scheduled line capacity-time; may exceed 1; null"
        " when lines exist but none is scheduled for any of the window"
    )
    power_kw: float = Field(description="sum of the online power meters' latest power_kw")
    energy_kwh: float = Field(description="energy_kwh increase over the window")
    energy_intensity_kwh_per_unit: float | None = Field(
        description="energy_kwh / output increase; null when there was no output"
    )
    alarm_rate: float = Field(description="online devices in alarm / online devices (0 if none)")
    health_index: float = Field(description="0-100, one decimal; see components")


class HealthComponent(_Out):
    """One term of the health index."""

    weight: float
    value: float = Field(description="the value the index uses (capacity capped at 1)")
    points: float = Field(description="100 x weight x value")


class Coverage(_Out):
    """How many of the devices a signal depends on contributed data in the window."""

    devices: int
    reporting: int
    share: float


class Alarm(_Out):
    """Why one online device is in alarm."""

    device_id: str
    factory_id: str
    metric: str
    reason: str = Field(description="state, below_min or above_max")
    ts: datetime
    value: float | None = None
    text: str | None = None
    threshold: float | None = None


class SignalCounts(_Out):
    """The counts behind each ratio."""

    devices_registered: int
    devices_online: int
    offline_no_data: int
    offline_silence: int
    offline_last_will: int
    factories: int
    factories_with_lines: int
    factories_operating: int
    lines: int
    lines_online: int
    lines_running: int
    lines_in_fault: int
    line_capacity_units_per_hour: float
    output_units_increase: float
    meters: int
    meters_online: int
    energy_kwh_increase: float
    devices_in_alarm: int
    factories_scheduled: int = Field(
        description="factories with lines scheduled at as_of (operating_rate's denominator)"
    )
    scheduled_fraction_of_window: float = Field(
        description="mean share of the window the park's factories are scheduled (1: always)"
    )
    capacity_units_off_shift: float = Field(
        description="line capacity-time (units) of the window falling off shift; the"
        " capacity_utilization denominator is line_capacity_units_per_hour x W less this"
    )


class ParkSignals(_Out):
    """A park's live signals over the window ending at ``as_of``."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "park_id": "hebi-tech",
                    "name": "Hebi Digital Economy Park",
                    "city": "Hebi",
                    "as_of": "2026-11-26T10:00:00Z",
                    "window_s": 300,
                    "online_timeout_s": 90,
                    "signals": _EXAMPLE_SIGNALS,
                    "counts": _EXAMPLE_COUNTS,
                    "components": _EXAMPLE_COMPONENTS,
                    "coverage": _EXAMPLE_COVERAGE,
                    "alarms": [
                        {
                            "device_id": "f01-env-1",
                            "factory_id": "f01",
                            "metric": "temp_c",
                            "reason": "above_max",
                            "ts": "2026-11-26T09:59:45Z",
                            "value": 36.0,
                            "threshold": 35.0,
                        }
                    ],
                }
            ]
        },
    )

    park_id: str
    name: str
    city: str
    as_of: datetime
    window_s: float
    online_timeout_s: float
    signals: SignalValues
    counts: SignalCounts
    components: dict[str, HealthComponent]
    coverage: dict[str, Coverage]
    alarms: list[Alarm]


class ParkRank(_Out):
    """A park's place in its city, by health index (ties by park id)."""

    rank: int
    park_id: str
    name: str
    health_index: float
    signals: SignalValues
    counts: SignalCounts


class CitySignals(_Out):
    """A city's live signals: ratios recomputed from its parks' summed counts."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "city": "Hebi",
                    "as_of": "2026-11-26T10:00:00Z",
                    "window_s": 300,
                    "online_timeout_s": 90,
                    "parks": 2,
                    "signals": _EXAMPLE_SIGNALS,
                    "counts": _EXAMPLE_COUNTS,
                    "components": _EXAMPLE_COMPONENTS,
                    "coverage": _EXAMPLE_COVERAGE,
                    "ranking": [
                        {
                            "rank": 1,
                            "park_id": "hebi-tech",
                            "name": "Hebi Digital Economy Park",
                            "health_index": 71.4,
                            "signals": _EXAMPLE_SIGNALS,
                            "counts": _EXAMPLE_COUNTS,
                        }
                    ],
                }
            ]
        },
    )

    city: str
    as_of: datetime
    window_s: float
    online_timeout_s: float
    parks: int
    signals: SignalValues
    counts: SignalCounts
    components: dict[str, HealthComponent]
    coverage: dict[str, Coverage]
    ranking: list[ParkRank]


class BucketCounts(_Out):
    """The sums behind one history bucket (device and factory counts in minutes)."""

    minutes: int
    device_minutes_registered: int
    device_minutes_online: int
    factory_minutes_with_lines: int
    factory_minutes_scheduled: int = Field(
        description="factory-minutes with lines their calendars schedule (operating_rate's"
        " denominator; all of them without calendars)"
    )
    factory_minutes_operating: int
    line_minutes_running: int
    line_capacity_units: float = Field(description="what the lines could make in the bucket")
    output_units_increase: float
    meter_minutes_reporting: int
    power_kw_minutes: float = Field(description="sum over minutes of the park's power")
    energy_kwh_increase: float
    device_minutes_in_alarm: int


class SignalBucket(_Out):
    """The signals of one history bucket; ``ts`` is the bucket's start."""

    ts: datetime
    start: datetime = Field(description="start of the part of the bucket inside the request")
    end: datetime = Field(description="end (exclusive) of that part")
    signals: SignalValues
    counts: BucketCounts
    components: dict[str, HealthComponent]
    coverage: dict[str, Coverage]


class SignalHistory(_Out):
    """A park's signals per bucket, computed from the per-minute roll-ups."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "park_id": "hebi-tech",
                    "bucket": "1h",
                    "start": "2026-11-26T00:00:00Z",
                    "end": "2026-11-26T02:00:00Z",
                    "buckets": [
                        {
                            "ts": "2026-11-26T00:00:00Z",
                            "start": "2026-11-26T00:00:00Z",
                            "end": "2026-11-26T01:00:00Z",
                            "signals": _EXAMPLE_SIGNALS,
                            "counts": _EXAMPLE_BUCKET_COUNTS,
                            "components": _EXAMPLE_COMPONENTS,
                            "coverage": _EXAMPLE_COVERAGE,
                        }
                    ],
                }
            ]
        },
    )

    park_id: str
    bucket: str
    start: datetime
    end: datetime
    buckets: list[SignalBucket]


class MetricPoint(_Out):
    """One bucket of a park metric; ``value`` is null when no device had data in it."""

    ts: datetime
    value: float | None
    minutes: int = Field(description="minutes of the bucket in which a device had data")


class ParkMetric(_Out):
    """A park metric per bucket, from the per-minute roll-ups, gaps as nulls."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "park_id": "hebi-tech",
                    "metric": "power_kw",
                    "kind": "gauge",
                    "bucket": "15m",
                    "agg": "avg",
                    "state": None,
                    "start": "2026-11-26T09:00:00Z",
                    "end": "2026-11-26T10:00:00Z",
                    "points": [
                        {"ts": "2026-11-26T09:00:00Z", "value": 1520.4, "minutes": 15},
                        {"ts": "2026-11-26T09:15:00Z", "value": None, "minutes": 0},
                    ],
                }
            ]
        },
    )

    park_id: str
    metric: str
    kind: str
    bucket: str
    agg: str
    state: str | None
    start: datetime
    end: datetime
    points: list[MetricPoint]


class AvailabilityTransition(_Out):
    """The device went online (or offline) at ``ts``."""

    ts: datetime
    online: bool
    reason: str = Field(description="reading, status, last_will, silence or clean_disconnect")


class DeviceAvailability(_Out):
    """A device's online state over ``[start, end)``: transitions and online share."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "device_id": "f01-meter-1",
                    "start": "2026-11-26T10:00:00Z",
                    "end": "2026-11-26T11:00:00Z",
                    "online_timeout_s": 90,
                    "online_at_start": True,
                    "online_s": 1970.0,
                    "online_share": 0.5472,
                    "transitions": [
                        {"ts": "2026-11-26T10:11:30Z", "online": False, "reason": "silence"},
                        {"ts": "2026-11-26T10:20:00Z", "online": True, "reason": "reading"},
                        {"ts": "2026-11-26T10:30:10Z", "online": False, "reason": "last_will"},
                    ],
                }
            ]
        },
    )

    device_id: str
    start: datetime
    end: datetime
    online_timeout_s: float
    online_at_start: bool
    online_s: float
    online_share: float
    transitions: list[AvailabilityTransition]
