"""Park signals per history bucket, from sums of the park's per-minute roll-up.

Each signal of the live table is applied to a bucket ``[b, b + width)`` clipped to the
request's ``[start, end)`` (both whole minutes), with the minute as the unit of presence:
a device counts as online in a minute when it sent a reading in it. The precise
definitions are in ``docs/signals.md``; ``derive_signals`` turns the sums into ratios.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from services.core.calendar import WorkCalendar, scheduled_seconds_each
from services.core.registry import ParkInfo
from services.core.signals import (
    ENERGY_METRIC,
    LINE_TYPE,
    METER_TYPE,
    Coverage,
    Signal,
    SignalTotals,
    SignalValues,
    can_alarm,
    derive_signals,
    has_counter,
)

MINUTE = timedelta(minutes=1)
# TimescaleDB's default time_bucket origin (a Monday); every width here divides a week.
BUCKET_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


class Bucket(StrEnum):
    """History bucket widths."""

    MINUTE = "1m"
    FIVE_MINUTES = "5m"
    FIFTEEN_MINUTES = "15m"
    HOUR = "1h"
    DAY = "1d"

    @property
    def width(self) -> timedelta:
        """The bucket's width."""
        return _WIDTHS[self]


_WIDTHS = {
    Bucket.MINUTE: timedelta(minutes=1),
    Bucket.FIVE_MINUTES: timedelta(minutes=5),
    Bucket.FIFTEEN_MINUTES: timedelta(minutes=15),
    Bucket.HOUR: timedelta(hours=1),
    Bucket.DAY: timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class RegistryCounts:
    """A park's registered devices by the role they play in the signals (the denominators)."""

    devices: int = 0
    factories_with_lines: int = 0
    lines: int = 0
    line_capacity_units_per_hour: float = 0.0
    meters: int = 0
    energy_devices: int = 0
    alarm_devices: int = 0


def registry_counts(park: ParkInfo) -> RegistryCounts:
    """Count a park's devices by the role they play in the signals."""
    lines = [d for d in park.devices if d.type_id == LINE_TYPE]
    return RegistryCounts(
        devices=len(park.devices),
        factories_with_lines=len({d.factory_id for d in lines}),
        lines=len(lines),
        line_capacity_units_per_hour=sum(d.capacity_units_per_hour or 0.0 for d in lines),
        meters=sum(d.type_id == METER_TYPE for d in park.devices),
        energy_devices=sum(has_counter(d, ENERGY_METRIC) for d in park.devices),
        alarm_devices=sum(any(map(can_alarm, d.metrics.values())) for d in park.devices),
    )


@dataclass(frozen=True, slots=True)
class MinuteTotals:
    """Sums over a bucket's minutes of the park's per-minute roll-up.

    Counts of devices and factories are device-minutes and factory-minutes; ``power_kw`` is
    the sum over minutes of the park's power (kW x minutes).
    """

    devices_reporting: int = 0
    lines_reporting_state: int = 0
    lines_running: int = 0
    factories_operating: int = 0
    lines_reporting_output: int = 0
    output_units: float = 0.0
    meters_reporting_power: int = 0
    power_kw: float = 0.0
    energy_reporting: int = 0
    energy_kwh: float = 0.0
    alarm_devices_reporting: int = 0
    devices_in_alarm: int = 0

    def __add__(self, other: MinuteTotals) -> MinuteTotals:
        """Add two sets of sums field by field."""
        return MinuteTotals(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True, slots=True)
class BucketSlot:
    """One bucket of a history: its aligned start and the part of it the request covers."""

    ts: datetime
    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        """Whole minutes covered."""
        return int((self.end - self.start) / MINUTE)


@dataclass(frozen=True, slots=True)
class FactoryLines:
    """A factory's production lines as planned time sees them: their capacity and calendar."""

    lines: int
    capacity_units_per_hour: float
    calendar: WorkCalendar | None


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """Planned time of one bucket: its scheduled factory-minutes and capacity-time.

    Factory-minutes are those of factories with lines; ``lines_off_shift`` counts the lines
    whose factory has no scheduled minute in the bucket.
    """

    factory_minutes_scheduled: float
    factory_minutes_off_shift: float
    capacity_units: float
    lines_off_shift: int


@dataclass(frozen=True, slots=True)
class BucketSignals:
    """The signals of one history bucket with the sums behind them.

    ``factory_minutes_scheduled`` is the part of the factory-minutes with lines that their
    calendars schedule (all of them without calendars).
    """

    slot: BucketSlot
    signals: SignalValues
    totals: SignalTotals
    sums: MinuteTotals
    coverage: Mapping[Signal, Coverage]
    factory_minutes_with_lines: float = 0.0
    factory_minutes_scheduled: float = 0.0


def floor_minute(ts: datetime) -> datetime:
    """Return ``ts`` truncated to its minute (UTC), as ``time_bucket('1 minute', ts)`` does."""
    # Ingest calls this per reading (core/batch_summary); readings are already UTC, and the
    # identity check skips astimezone's call for them.
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(second=0, microsecond=0)


def bucket_start(ts: datetime, bucket: Bucket) -> datetime:
    """Return the start of the bucket holding ``ts`` (aligned to ``BUCKET_ORIGIN``)."""
    steps = (ts - BUCKET_ORIGIN) // bucket.width
    return BUCKET_ORIGIN + steps * bucket.width


def bucket_slots(start: datetime, end: datetime, bucket: Bucket) -> list[BucketSlot]:
    """Return the buckets meeting ``[start, end)``, each clipped to it.

    Raises:
        ValueError: ``start`` or ``end`` is not a whole minute, or ``start`` is not before
            ``end``.
    """
    if floor_minute(start) != start or floor_minute(end) != end:
        raise ValueError("start and end must be whole minutes")
    if start >= end:
        raise ValueError("start must be before end")
    slots = []
    ts = bucket_start(start, bucket)
    while ts < end:
        slots.append(BucketSlot(ts=ts, start=max(ts, start), end=min(ts + bucket.width, end)))
        ts += bucket.width
    return slots


def bucket_plans(
    slots: Sequence[BucketSlot], factories: Mapping[str, FactoryLines]
) -> list[BucketPlan]:
    """Return each bucket's planned time from the calendars of the factories with lines.

    Scheduled minutes are exact: shifts start and end on whole minutes of wall-clock time
    and every zone's offset is whole minutes. Each distinct calendar is expanded once.
    """
    spans = [(slot.start, slot.end) for slot in slots]
    # Factories that share a calendar (most follow their park's) are summed first.
    groups: dict[WorkCalendar | None, tuple[int, int, float]] = {}
    for found in factories.values():
        count, lines, capacity = groups.get(found.calendar, (0, 0, 0.0))
        groups[found.calendar] = (
            count + 1,
            lines + found.lines,
            capacity + found.capacity_units_per_hour,
        )
    per_group = [
        (count, lines, capacity, [round(s / 60.0) for s in scheduled_seconds_each(cal, spans)])
        for cal, (count, lines, capacity) in groups.items()
    ]
    plans = []
    for index, slot in enumerate(slots):
        scheduled = off = units = 0.0
        lines_off = 0
        for count, lines, capacity, minutes in per_group:
            m = minutes[index]
            scheduled += count * m
            off += count * (slot.minutes - m)
            units += capacity * m / 60.0
            if m == 0:
                lines_off += lines
        plans.append(
            BucketPlan(
                factory_minutes_scheduled=scheduled,
                factory_minutes_off_shift=off,
                capacity_units=units,
                lines_off_shift=lines_off,
            )
        )
    return plans


def bucket_signals(
    slot: BucketSlot,
    sums: MinuteTotals,
    registry: RegistryCounts,
    plan: BucketPlan | None = None,
) -> BucketSignals:
    """Apply the signal definitions to one bucket.

    The registry's counts times the bucket's minutes are the denominators: online_rate is
    online device-minutes over registered device-minutes, operating_rate operating
    factory-minutes over factory-minutes, capacity_utilization the output over the lines'
    capacity for the bucket's duration, power_kw the park's mean power, alarm_rate
    device-minutes in alarm over online device-minutes. With a ``plan`` (a park with
    calendars) the denominators of operating_rate and capacity_utilization are the
    scheduled factory-minutes and capacity-time; storage passes the operating factory-minutes
    inside shifts as ``sums.factories_operating`` (the output numerator stays the roll-up's).
    """
    minutes = slot.minutes
    with_lines = registry.factories_with_lines * minutes
    scheduled: float = with_lines
    capacity = registry.line_capacity_units_per_hour * minutes / 60.0
    off_shift, lines_off_shift = 0.0, 0
    if plan is not None:
        scheduled, capacity = plan.factory_minutes_scheduled, plan.capacity_units
        off_shift, lines_off_shift = plan.factory_minutes_off_shift, plan.lines_off_shift
    totals = SignalTotals(
        devices_registered=registry.devices * minutes,
        devices_online=sums.devices_reporting,
        factories_with_lines=scheduled,
        factories_operating=sums.factories_operating,
        line_capacity_units=capacity,
        output_units=sums.output_units,
        power_kw=sums.power_kw / minutes if minutes else 0.0,
        energy_kwh=sums.energy_kwh,
        devices_in_alarm=sums.devices_in_alarm,
        factories_off_shift=off_shift,
        lines_off_shift=lines_off_shift,
    )
    everything = Coverage(registry.devices * minutes, sums.devices_reporting)
    energy = Coverage(registry.energy_devices * minutes, sums.energy_reporting)
    output = Coverage(registry.lines * minutes, sums.lines_reporting_output)
    coverage = {
        Signal.ONLINE_RATE: everything,
        Signal.OPERATING_RATE: Coverage(registry.lines * minutes, sums.lines_reporting_state),
        Signal.CAPACITY_UTILIZATION: output,
        Signal.POWER_KW: Coverage(registry.meters * minutes, sums.meters_reporting_power),
        Signal.ENERGY_KWH: energy,
        Signal.ENERGY_INTENSITY: energy + output,
        Signal.ALARM_RATE: Coverage(registry.alarm_devices * minutes, sums.alarm_devices_reporting),
        Signal.HEALTH_INDEX: everything,
    }
    return BucketSignals(
        slot=slot,
        signals=derive_signals(totals),
        totals=totals,
        sums=sums,
        coverage=coverage,
        factory_minutes_with_lines=with_lines,
        factory_minutes_scheduled=totals.factories_with_lines,
    )


HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ShiftHours:
    """The whole hours of a request with shifts laid over them, for each of several calendars.

    ``full[i]``: the spans of whole hours wholly inside the scheduled time of calendar ``i``.
    ``split``: the hours a shift of some calendar begins or ends inside (read minute by
    minute).
    """

    full: tuple[tuple[tuple[datetime, datetime], ...], ...]
    split: frozenset[datetime]


def shift_hours(
    scheduled: Sequence[Sequence[tuple[datetime, datetime]]], first: datetime, end: datetime
) -> ShiftHours:
    """Lay each calendar's scheduled intervals over the hours of ``[first, end)``.

    ``scheduled[i]`` is sorted and merged (as ``scheduled_intervals`` returns it); ``first``
    and ``end`` are whole hours. An hour no interval of a calendar meets is wholly outside it.
    """
    full: list[tuple[tuple[datetime, datetime], ...]] = []
    split: set[datetime] = set()
    for intervals in scheduled:
        spans: list[tuple[datetime, datetime]] = []
        for begins, ends in intervals:
            lo, hi = max(begins, first), min(ends, end)
            if lo >= hi:
                continue
            whole_from = bucket_start(lo, Bucket.HOUR)
            if whole_from != lo:
                split.add(whole_from)
                whole_from += HOUR
            whole_to = bucket_start(hi, Bucket.HOUR)
            if whole_to != hi:
                split.add(whole_to)
            if whole_from < whole_to:
                spans.append((whole_from, whole_to))
        full.append(tuple(spans))
    return ShiftHours(full=tuple(full), split=frozenset(split))


def operating_in_shift_minutes(
    minutes: Iterable[tuple[datetime, Sequence[str] | None, int]],
    scheduled: Sequence[Sequence[tuple[datetime, datetime]]],
    follows: Mapping[str, int],
    bucket: Bucket,
) -> dict[datetime, int]:
    """Per bucket, the operating factory-minutes that fall inside the factories' shifts.

    ``minutes``: (minute, the factories that operated in it, the roll-up's count); a minute
    folded before the list was kept (None) counts as the roll-up's number. ``scheduled[i]``:
    calendar ``i``'s intervals (sorted, merged); ``follows``: the calendar of each factory
    with lines (a factory not in it does not count).
    """
    starts = [[lo for lo, _ in intervals] for intervals in scheduled]
    allowed: dict[tuple[int, ...], frozenset[str]] = {}
    totals: dict[datetime, int] = {}
    for minute, operating, count in minutes:
        at = bucket_start(minute, bucket)
        if operating is None:
            totals[at] = totals.get(at, 0) + count
            continue
        in_shift = tuple(
            i
            for i, intervals in enumerate(scheduled)
            if (k := bisect_right(starts[i], minute) - 1) >= 0 and minute < intervals[k][1]
        )
        factories = allowed.get(in_shift)
        if factories is None:
            chosen = set(in_shift)
            factories = frozenset(f for f, i in follows.items() if i in chosen)
            allowed[in_shift] = factories
        totals[at] = totals.get(at, 0) + len(factories.intersection(operating))
    return totals
