"""Live park signals from plain inputs, to the letter of PRODUCT.md's signal table.

The storage layer gathers, for one park and one instant ``as_of``, what is known about each
registered device (its latest values, newest reading, retained status and counter increases
over the window); this module turns that into the signals, the counts behind each ratio,
the health-index components and each signal's coverage. Sums of counts (a city, a history
bucket) go through the same ``derive_signals``, so ratios are always recomputed from
summed counts rather than averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from schemas.fleet import MetricKind
from services.core.alarms import (
    FAULT_STATE,
    Alarm,
    AlarmReason,
    MetricValue,
    can_alarm,
    metric_alarm,
)
from services.core.calendar import FactoryTime
from services.core.registry import DeviceEntry

# The public names, with the alarm types users of the signals name here.
__all__ = [
    "ENERGY_METRIC",
    "FAULT_STATE",
    "LINE_TYPE",
    "METER_TYPE",
    "OUTPUT_METRIC",
    "POWER_METRIC",
    "RUNNING_STATE",
    "SECONDS_PER_HOUR",
    "STATE_METRIC",
    "WEIGHT_CAPACITY",
    "WEIGHT_NO_ALARM",
    "WEIGHT_ONLINE",
    "WEIGHT_OPERATING",
    "Alarm",
    "AlarmReason",
    "Coverage",
    "DeviceObservation",
    "FactoryTime",
    "HealthComponent",
    "MetricValue",
    "OfflineReason",
    "ParkCounts",
    "ParkSignals",
    "Signal",
    "SignalTotals",
    "SignalValues",
    "StatusPoint",
    "can_alarm",
    "combine_parks",
    "derive_signals",
    "device_alarms",
    "has_counter",
    "health_components",
    "health_index",
    "offline_reason",
    "park_coverage",
    "park_signals",
    "ratio",
    "round_half_up",
    "sql_parameters",
    "totals_from_counts",
]

# Device types and metrics the signal table names.
LINE_TYPE = "production_line"
METER_TYPE = "power_meter"
STATE_METRIC = "state"
RUNNING_STATE = "running"
OUTPUT_METRIC = "output_units"
ENERGY_METRIC = "energy_kwh"
POWER_METRIC = "power_kw"

# Health-index weights (PRODUCT.md): they add up to 1, so the index runs from 0 to 100.
WEIGHT_OPERATING = 0.30
WEIGHT_CAPACITY = 0.25
WEIGHT_ONLINE = 0.25
WEIGHT_NO_ALARM = 0.20

SECONDS_PER_HOUR = 3600.0


def sql_parameters() -> dict[str, str]:
    """Return the signal vocabulary and the alarm rule's words as bound parameters for SQL.

    SQL that applies these rules (the roll-up fold) names them ``%(line_type)s`` and so
    on, so each word is written once, here and in ``alarms``.
    """
    return {
        "line_type": LINE_TYPE,
        "meter_type": METER_TYPE,
        "state_metric": STATE_METRIC,
        "running_state": RUNNING_STATE,
        "output_metric": OUTPUT_METRIC,
        "energy_metric": ENERGY_METRIC,
        "power_metric": POWER_METRIC,
        "fault_state": FAULT_STATE,
        "counter_kind": MetricKind.COUNTER.value,
        "gauge_kind": MetricKind.GAUGE.value,
        "state_kind": MetricKind.STATE.value,
    }


class Signal(StrEnum):
    """The signals of a park, in the order of PRODUCT.md's table."""

    ONLINE_RATE = "online_rate"
    OPERATING_RATE = "operating_rate"
    CAPACITY_UTILIZATION = "capacity_utilization"
    POWER_KW = "power_kw"
    ENERGY_KWH = "energy_kwh"
    ENERGY_INTENSITY = "energy_intensity_kwh_per_unit"
    ALARM_RATE = "alarm_rate"
    HEALTH_INDEX = "health_index"


class OfflineReason(StrEnum):
    """Why a registered device does not count as online at ``as_of``."""

    NO_DATA = "no_data"
    SILENCE = "silence"
    LAST_WILL = "last_will"


@dataclass(frozen=True, slots=True)
class StatusPoint:
    """A status message: the announced online flag at its measured time."""

    online: bool
    ts: datetime


@dataclass(frozen=True, slots=True)
class DeviceObservation:
    """What is known about one registered device at ``as_of``.

    Attributes:
        device: the registered device, with its metric rules (per-device alarm thresholds
            already applied over its type's).
        last_reading_ts: its newest reading at or before ``as_of``, any metric.
        status: its retained status at ``as_of`` (the newest status message at or before it).
        latest: per metric, the newest reading at or before ``as_of``.
        increases: per counter metric with readings, its increase over the window.
        window_metrics: the metrics with at least one reading inside the window.
    """

    device: DeviceEntry
    last_reading_ts: datetime | None = None
    status: StatusPoint | None = None
    latest: Mapping[str, MetricValue] = field(default_factory=dict)
    increases: Mapping[str, float] = field(default_factory=dict)
    window_metrics: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SignalTotals:
    """Additive quantities behind the signals; sums of these give a city's or a bucket's.

    In a history bucket the device and factory counts are device-minutes and
    factory-minutes; the ratios come out the same way.

    Planned time: ``factories_with_lines`` counts only the scheduled ones (the denominator
    of ``operating_rate``) and ``factories_off_shift`` the others; ``line_capacity_units``
    is the scheduled capacity-time and ``lines_off_shift`` counts lines with none. A rate
    whose denominator is empty only because nothing is scheduled is null.
    """

    devices_registered: float = 0.0
    devices_online: float = 0.0
    factories_with_lines: float = 0.0
    factories_operating: float = 0.0
    line_capacity_units: float = 0.0
    output_units: float = 0.0
    power_kw: float = 0.0
    energy_kwh: float = 0.0
    devices_in_alarm: float = 0.0
    factories_off_shift: float = 0.0
    lines_off_shift: float = 0.0

    def __add__(self, other: SignalTotals) -> SignalTotals:
        """Add two sets of totals field by field."""
        return SignalTotals(
            devices_registered=self.devices_registered + other.devices_registered,
            devices_online=self.devices_online + other.devices_online,
            factories_with_lines=self.factories_with_lines + other.factories_with_lines,
            factories_operating=self.factories_operating + other.factories_operating,
            line_capacity_units=self.line_capacity_units + other.line_capacity_units,
            output_units=self.output_units + other.output_units,
            power_kw=self.power_kw + other.power_kw,
            energy_kwh=self.energy_kwh + other.energy_kwh,
            devices_in_alarm=self.devices_in_alarm + other.devices_in_alarm,
            factories_off_shift=self.factories_off_shift + other.factories_off_shift,
            lines_off_shift=self.lines_off_shift + other.lines_off_shift,
        )


@dataclass(frozen=True, slots=True)
class HealthComponent:
    """One term of the health index: its weight, the value it uses and the points it adds."""

    weight: float
    value: float
    points: float


@dataclass(frozen=True, slots=True)
class SignalValues:
    """The signals (ratios as fractions) and the health-index components behind the index."""

    online_rate: float
    operating_rate: float | None
    capacity_utilization: float | None
    power_kw: float
    energy_kwh: float
    energy_intensity_kwh_per_unit: float | None
    alarm_rate: float
    health_index: float
    components: Mapping[str, HealthComponent]


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many of the devices a signal depends on contributed data in the window."""

    devices: int
    reporting: int

    @property
    def share(self) -> float:
        """Reporting devices as a fraction of those the signal depends on (1 when none)."""
        return self.reporting / self.devices if self.devices else 1.0

    def __add__(self, other: Coverage) -> Coverage:
        """Add two coverages (a city's from its parks')."""
        return Coverage(self.devices + other.devices, self.reporting + other.reporting)


@dataclass(frozen=True, slots=True)
class ParkCounts:
    """The counts behind each ratio of one park (or, summed, of a city)."""

    devices_registered: int = 0
    devices_online: int = 0
    offline_no_data: int = 0
    offline_silence: int = 0
    offline_last_will: int = 0
    factories: int = 0
    factories_with_lines: int = 0
    factories_operating: int = 0
    lines: int = 0
    lines_online: int = 0
    lines_running: int = 0
    lines_in_fault: int = 0
    line_capacity_units_per_hour: float = 0.0
    output_units_increase: float = 0.0
    meters: int = 0
    meters_online: int = 0
    energy_kwh_increase: float = 0.0
    devices_in_alarm: int = 0
    # Planned time, as what is not scheduled (all 0 for a fleet without calendars):
    # factories with lines off shift at as_of, lines whose factory is off shift for all of
    # the window, the capacity-time (units) of lines while off shift, and the sum over
    # factories of the share of the window each is off shift.
    factories_off_shift: int = 0
    lines_off_shift: int = 0
    capacity_units_off_shift: float = 0.0
    factory_window_off_shift: float = 0.0

    @property
    def factories_scheduled(self) -> int:
        """Factories with lines scheduled at ``as_of`` (``operating_rate``'s denominator)."""
        return self.factories_with_lines - self.factories_off_shift

    @property
    def scheduled_fraction_of_window(self) -> float:
        """The mean share of the window the factories are scheduled (1 without factories)."""
        if not self.factories:
            return 1.0
        return 1.0 - self.factory_window_off_shift / self.factories

    def __add__(self, other: ParkCounts) -> ParkCounts:
        """Add two parks' counts field by field."""
        return ParkCounts(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in ParkCounts.__dataclass_fields__
            }
        )


@dataclass(frozen=True, slots=True)
class ParkSignals:
    """Everything the live signals endpoint answers for one park (or one city)."""

    as_of: datetime
    window_s: float
    signals: SignalValues
    counts: ParkCounts
    totals: SignalTotals
    coverage: Mapping[Signal, Coverage]
    alarms: tuple[Alarm, ...] = ()


def ratio(numerator: float, denominator: float) -> float:
    """Return ``numerator / denominator``, or 0 when the denominator is 0."""
    return numerator / denominator if denominator > 0 else 0.0


def round_half_up(value: float, places: int = 1) -> float:
    """Round as people do (2.25 → 2.3), not to even as ``round`` does."""
    quantum = Decimal(1).scaleb(-places)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def health_components(
    operating_rate: float | None,
    capacity_utilization: float | None,
    online_rate: float,
    alarm_rate: float,
) -> dict[str, HealthComponent]:
    """Return the weighted terms of the health index, in points out of 100.

    A null rate (nothing scheduled) is left out and the other weights are scaled to sum
    to 1; with every rate present the weights are PRODUCT.md's as they stand.
    """
    terms = {
        "operating_rate": (WEIGHT_OPERATING, operating_rate),
        "capacity_utilization": (
            WEIGHT_CAPACITY,
            None if capacity_utilization is None else min(capacity_utilization, 1.0),
        ),
        "online_rate": (WEIGHT_ONLINE, online_rate),
        "no_alarm": (WEIGHT_NO_ALARM, 1.0 - alarm_rate),
    }
    present = {name: (w, v) for name, (w, v) in terms.items() if v is not None}
    scale = 1.0 if len(present) == len(terms) else 1.0 / sum(w for w, _ in present.values())
    return {
        name: HealthComponent(weight=w * scale, value=v, points=100.0 * (w * scale) * v)
        for name, (w, v) in present.items()
    }


def health_index(components: Mapping[str, HealthComponent]) -> float:
    """Return the weighted sum of the components in points, to one decimal."""
    return round_half_up(100.0 * sum(c.weight * c.value for c in components.values()), 1)


def derive_signals(totals: SignalTotals) -> SignalValues:
    """Compute every signal from additive totals (one park, a city or a history bucket)."""
    online_rate = ratio(totals.devices_online, totals.devices_registered)
    operating_rate = (
        None
        if totals.factories_with_lines <= 0 and totals.factories_off_shift > 0
        else ratio(totals.factories_operating, totals.factories_with_lines)
    )
    capacity_utilization = (
        None
        if totals.line_capacity_units <= 0 and totals.lines_off_shift > 0
        else ratio(totals.output_units, totals.line_capacity_units)
    )
    alarm_rate = ratio(totals.devices_in_alarm, totals.devices_online)
    intensity = totals.energy_kwh / totals.output_units if totals.output_units > 0 else None
    components = health_components(operating_rate, capacity_utilization, online_rate, alarm_rate)
    return SignalValues(
        online_rate=online_rate,
        operating_rate=operating_rate,
        capacity_utilization=capacity_utilization,
        power_kw=totals.power_kw,
        energy_kwh=totals.energy_kwh,
        energy_intensity_kwh_per_unit=intensity,
        alarm_rate=alarm_rate,
        health_index=health_index(components),
        components=components,
    )


def offline_reason(
    last_reading_ts: datetime | None,
    status: StatusPoint | None,
    as_of: datetime,
    online_timeout_s: float,
) -> OfflineReason | None:
    """Return why a device is offline at ``as_of``, or None when it is online.

    Online means: its newest reading at or before ``as_of`` is at most ``online_timeout_s``
    old, and its retained status is not an offline message sent at or after that reading.
    """
    if last_reading_ts is None or last_reading_ts > as_of:
        return OfflineReason.NO_DATA
    if (as_of - last_reading_ts).total_seconds() > online_timeout_s:
        return OfflineReason.SILENCE
    if status is not None and not status.online and last_reading_ts <= status.ts <= as_of:
        return OfflineReason.LAST_WILL
    return None


def device_alarms(observation: DeviceObservation) -> list[Alarm]:
    """Return every alarm raised by a device's latest values (online or not)."""
    device = observation.device
    alarms = []
    for metric, rule in sorted(device.metrics.items()):
        latest = observation.latest.get(metric)
        if latest is None:
            continue
        alarm = metric_alarm(device, metric, rule, latest)
        if alarm is not None:
            alarms.append(alarm)
    return alarms


def has_counter(device: DeviceEntry, metric: str) -> bool:
    """Return whether a device's type has ``metric`` as a counter."""
    rule = device.metrics.get(metric)
    return rule is not None and rule.kind is MetricKind.COUNTER


def _coverage(
    observations: Iterable[DeviceObservation], metrics: frozenset[str] | None
) -> Coverage:
    """Coverage over ``observations``; data means any metric (None) or one of ``metrics``."""
    devices = 0
    reporting = 0
    for obs in observations:
        devices += 1
        seen = obs.window_metrics if metrics is None else obs.window_metrics & metrics
        reporting += bool(seen)
    return Coverage(devices, reporting)


def park_coverage(observations: Sequence[DeviceObservation]) -> dict[Signal, Coverage]:
    """Return, per signal, how many of the devices it depends on reported in the window."""
    lines = [o for o in observations if o.device.type_id == LINE_TYPE]
    meters = [o for o in observations if o.device.type_id == METER_TYPE]
    energy = [o for o in observations if has_counter(o.device, ENERGY_METRIC)]
    alarmable = [o for o in observations if any(map(can_alarm, o.device.metrics.values()))]
    output = frozenset({OUTPUT_METRIC})
    energy_metric = frozenset({ENERGY_METRIC})
    everything = _coverage(observations, None)
    alarm_metrics_seen = sum(
        1
        for o in alarmable
        if any(can_alarm(o.device.metrics[m]) for m in o.window_metrics if m in o.device.metrics)
    )
    return {
        Signal.ONLINE_RATE: everything,
        Signal.OPERATING_RATE: _coverage(lines, frozenset({STATE_METRIC})),
        Signal.CAPACITY_UTILIZATION: _coverage(lines, output),
        Signal.POWER_KW: _coverage(meters, frozenset({POWER_METRIC})),
        Signal.ENERGY_KWH: _coverage(energy, energy_metric),
        Signal.ENERGY_INTENSITY: _coverage(energy, energy_metric) + _coverage(lines, output),
        Signal.ALARM_RATE: Coverage(len(alarmable), alarm_metrics_seen),
        Signal.HEALTH_INDEX: everything,
    }


def park_signals(
    observations: Sequence[DeviceObservation],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
    planned: Mapping[str, FactoryTime] | None = None,
) -> ParkSignals:
    """Compute a park's live signals over the window ``(as_of - window_s, as_of]``.

    Args:
        observations: one per device registered in the park.
        as_of: the instant the signals describe.
        window_s: the window W, in seconds, of the counter increases.
        online_timeout_s: how old a device's newest reading may be for it to count as online.
        planned: per factory, its planned time over the window (``calendar.factory_times``);
            a factory left out is always scheduled.

    Returns:
        The signals with their counts, totals, coverage and the alarms behind ``alarm_rate``.
    """
    reasons = {
        o.device.device_id: offline_reason(o.last_reading_ts, o.status, as_of, online_timeout_s)
        for o in observations
    }
    online = [o for o in observations if reasons[o.device.device_id] is None]
    lines = [o for o in observations if o.device.type_id == LINE_TYPE]
    lines_online = [o for o in lines if reasons[o.device.device_id] is None]
    running = [o for o in lines_online if _state_is(o, RUNNING_STATE)]
    meters = [o for o in observations if o.device.type_id == METER_TYPE]
    meters_online = [o for o in meters if reasons[o.device.device_id] is None]
    alarms = [alarm for o in online for alarm in device_alarms(o)]
    in_alarm = {alarm.device_id for alarm in alarms}

    always = FactoryTime(scheduled_at_end=True, scheduled_s=window_s)
    times = {
        factory: (planned or {}).get(factory, always)
        for factory in {o.device.factory_id for o in observations}
    }
    capacity = sum(o.device.capacity_units_per_hour or 0.0 for o in lines)
    scheduled_lines = [o for o in lines if times[o.device.factory_id].scheduled_s > 0]
    output = sum(o.increases.get(OUTPUT_METRIC, 0.0) for o in scheduled_lines)
    off_shift_s = {f: max(window_s - t.scheduled_s, 0.0) for f, t in times.items()}
    energy = sum(
        o.increases.get(ENERGY_METRIC, 0.0)
        for o in observations
        if has_counter(o.device, ENERGY_METRIC)
    )
    power = sum(_value(o, POWER_METRIC) for o in meters_online)
    factories_with_lines = {o.device.factory_id for o in lines}
    factories_scheduled = {f for f in factories_with_lines if times[f].scheduled_at_end}
    factories_operating = {o.device.factory_id for o in running} & factories_scheduled

    counts = ParkCounts(
        devices_registered=len(observations),
        devices_online=len(online),
        offline_no_data=sum(r is OfflineReason.NO_DATA for r in reasons.values()),
        offline_silence=sum(r is OfflineReason.SILENCE for r in reasons.values()),
        offline_last_will=sum(r is OfflineReason.LAST_WILL for r in reasons.values()),
        factories=len({o.device.factory_id for o in observations}),
        factories_with_lines=len(factories_with_lines),
        factories_operating=len(factories_operating),
        lines=len(lines),
        lines_online=len(lines_online),
        lines_running=len(running),
        lines_in_fault=sum(_state_is(o, FAULT_STATE) for o in lines_online),
        line_capacity_units_per_hour=capacity,
        output_units_increase=output,
        meters=len(meters),
        meters_online=len(meters_online),
        energy_kwh_increase=energy,
        devices_in_alarm=len(in_alarm),
        factories_off_shift=len(factories_with_lines - factories_scheduled),
        lines_off_shift=len(lines) - len(scheduled_lines),
        capacity_units_off_shift=_capacity_time(lines, off_shift_s),
        factory_window_off_shift=(
            sum(s / window_s for s in off_shift_s.values()) if window_s > 0 else 0.0
        ),
    )
    totals = totals_from_counts(counts, window_s=window_s, power_kw=power)
    return ParkSignals(
        as_of=as_of,
        window_s=window_s,
        signals=derive_signals(totals),
        counts=counts,
        totals=totals,
        coverage=park_coverage(observations),
        alarms=tuple(alarms),
    )


def _capacity_time(lines: Sequence[DeviceObservation], seconds: Mapping[str, float]) -> float:
    """Σ over lines of capacity x its factory's ``seconds`` ÷ 3600 (units), 0 when none."""
    by_seconds: dict[float, float] = {}
    for o in lines:
        s = seconds[o.device.factory_id]
        if s > 0:
            by_seconds[s] = by_seconds.get(s, 0.0) + (o.device.capacity_units_per_hour or 0.0)
    return sum(capacity * s / SECONDS_PER_HOUR for s, capacity in by_seconds.items())


def totals_from_counts(counts: ParkCounts, *, window_s: float, power_kw: float) -> SignalTotals:
    """Return the additive totals of a park's (or a city's) counts over a window.

    The lines' capacity-time is their capacity over W less what falls off shift (nothing
    at all when every line is off shift for the whole window).
    """
    capacity = counts.line_capacity_units_per_hour * window_s / SECONDS_PER_HOUR
    if counts.lines_off_shift >= counts.lines > 0:
        capacity = 0.0
    elif counts.capacity_units_off_shift > 0:
        capacity = max(capacity - counts.capacity_units_off_shift, 0.0)
    return SignalTotals(
        devices_registered=counts.devices_registered,
        devices_online=counts.devices_online,
        factories_with_lines=counts.factories_scheduled,
        factories_operating=counts.factories_operating,
        line_capacity_units=capacity,
        output_units=counts.output_units_increase,
        power_kw=power_kw,
        energy_kwh=counts.energy_kwh_increase,
        devices_in_alarm=counts.devices_in_alarm,
        factories_off_shift=counts.factories_off_shift,
        lines_off_shift=counts.lines_off_shift,
    )


def combine_parks(parks: Sequence[ParkSignals], *, as_of: datetime, window_s: float) -> ParkSignals:
    """Combine parks (a city): counts and totals are summed, then every ratio is recomputed."""
    counts = sum((p.counts for p in parks), ParkCounts())
    totals = sum((p.totals for p in parks), SignalTotals())
    coverage: dict[Signal, Coverage] = {}
    for park in parks:
        for signal, cov in park.coverage.items():
            coverage[signal] = coverage.get(signal, Coverage(0, 0)) + cov
    return ParkSignals(
        as_of=as_of,
        window_s=window_s,
        signals=derive_signals(totals),
        counts=counts,
        totals=totals,
        coverage=coverage,
        alarms=tuple(alarm for park in parks for alarm in park.alarms),
    )


def _state_is(observation: DeviceObservation, state: str) -> bool:
    latest = observation.latest.get(STATE_METRIC)
    return latest is not None and latest.text == state


def _value(observation: DeviceObservation, metric: str) -> float:
    latest = observation.latest.get(metric)
    return latest.value if latest is not None and latest.value is not None else 0.0
