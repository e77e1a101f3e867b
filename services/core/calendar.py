"""Planned time: when a factory is scheduled to run, from its calendar in its park's time zone.

A shift starts on each of its weekdays at ``start`` wall-clock time and ends at ``end`` the
same day, or the next day when ``end`` is at or before ``start`` (a night shift). A shift
that starts on a holiday does not run; a night shift that started the evening before a
holiday runs to its end. Wall-clock times are turned into instants in the park's zone, so
a shift across a daylight-saving change lasts an hour more or less. A factory without a
calendar (and whose park has none) is always scheduled. The clock is never read here:
every instant is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.fleet import WEEKDAYS, Calendar

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """One shift of a calendar: the weekdays it starts on (0 is Monday) and its times."""

    weekdays: frozenset[int]
    start: time
    end: time

    @property
    def overnight(self) -> bool:
        """Whether the shift ends on the day after it starts."""
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """A calendar in force for a factory: its shifts, holidays and the park's time zone."""

    zone: ZoneInfo
    shifts: tuple[ShiftRule, ...]
    holidays: frozenset[date]


@dataclass(frozen=True, slots=True)
class FactoryTime:
    """A factory's planned time for one window: scheduled at its end, and for how long."""

    scheduled_at_end: bool
    scheduled_s: float


def work_calendar(calendar: Calendar | None, timezone: str) -> WorkCalendar | None:
    """Build the calendar in force from a fleet calendar (None: always scheduled)."""
    if calendar is None:
        return None
    return WorkCalendar(
        zone=ZoneInfo(timezone),
        shifts=tuple(
            ShiftRule(
                weekdays=frozenset(WEEKDAYS.index(day) for day in shift.days),
                start=time.fromisoformat(shift.start),
                end=time.fromisoformat(shift.end),
            )
            for shift in calendar.shifts
        ),
        holidays=frozenset(calendar.holidays),
    )


def calendar_in_force(park: Calendar | None, factory: Calendar | None) -> Calendar | None:
    """Return the calendar a factory follows: its own, else its park's, else none."""
    return factory if factory is not None else park


def _wall(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant of a wall-clock time on a day in a zone (a gap or repeat takes fold 0)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def scheduled_intervals(
    calendar: WorkCalendar | None, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Return the scheduled parts of ``[start, end)``, in UTC, sorted and merged.

    Args:
        calendar: the calendar in force; None means always scheduled.
        start: the interval's start (aware).
        end: its end (aware); an empty or reversed interval has no scheduled part.
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return []
    if calendar is None:
        return [(start, end)]
    found: list[tuple[datetime, datetime]] = []
    # A shift that covers part of the interval started at most a day before its start.
    day = start.astimezone(calendar.zone).date() - DAY
    last = end.astimezone(calendar.zone).date()
    while day <= last:
        if day not in calendar.holidays:
            for shift in calendar.shifts:
                if day.weekday() not in shift.weekdays:
                    continue
                begins = _wall(day, shift.start, calendar.zone)
                ends = _wall(day + DAY if shift.overnight else day, shift.end, calendar.zone)
                lo, hi = max(begins, start), min(ends, end)
                if lo < hi:
                    found.append((lo, hi))
        day += DAY
    return _merge(found)


def _merge(intervals: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def is_scheduled(calendar: WorkCalendar | None, ts: datetime) -> bool:
    """Return whether a shift covers the instant ``ts`` (its start included, its end not)."""
    return bool(scheduled_intervals(calendar, ts, ts + timedelta(microseconds=1)))


def scheduled_seconds(calendar: WorkCalendar | None, start: datetime, end: datetime) -> float:
    """Return how many seconds of ``[start, end)`` are scheduled."""
    return sum((hi - lo).total_seconds() for lo, hi in scheduled_intervals(calendar, start, end))


def scheduled_seconds_each(
    calendar: WorkCalendar | None, spans: Sequence[tuple[datetime, datetime]]
) -> list[float]:
    """Return the scheduled seconds of each span; spans are sorted and do not overlap.

    The calendar is expanded once over all of them (a month of hourly buckets costs one
    expansion, not 720), then swept.
    """
    if not spans:
        return []
    intervals = scheduled_intervals(calendar, spans[0][0], spans[-1][1])
    found: list[float] = []
    first = 0
    for lo, hi in spans:
        while first < len(intervals) and intervals[first][1] <= lo:
            first += 1
        seconds = 0.0
        i = first
        while i < len(intervals) and intervals[i][0] < hi:
            seconds += (min(hi, intervals[i][1]) - max(lo, intervals[i][0])).total_seconds()
            i += 1
        found.append(seconds)
    return found


def factory_times(
    calendars: Mapping[str, WorkCalendar | None], *, as_of: datetime, window_s: float
) -> dict[str, FactoryTime]:
    """Return each factory's planned time over the live window ``(as_of - W, as_of]``.

    The window's scheduled seconds do not depend on which end is open; "scheduled at
    ``as_of``" is whether a shift covers that instant.
    """
    start = as_of - timedelta(seconds=window_s)
    return {
        factory_id: FactoryTime(
            scheduled_at_end=is_scheduled(calendar, as_of),
            scheduled_s=scheduled_seconds(calendar, start, as_of),
        )
        for factory_id, calendar in calendars.items()
    }
