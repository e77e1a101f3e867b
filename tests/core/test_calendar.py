"""Planned time from calendars: shifts, nights past midnight, holidays, DST, worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.fleet import Calendar, parse_fleet
from services.core.calendar import (
    WorkCalendar,
    calendar_in_force,
    factory_times,
    is_scheduled,
    scheduled_intervals,
    scheduled_seconds,
    scheduled_seconds_each,
    work_calendar,
)
from services.core.history import (
    Bucket,
    BucketSlot,
    FactoryLines,
    MinuteTotals,
    RegistryCounts,
    bucket_plans,
    bucket_signals,
)
from services.core.signals import health_components, health_index

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def cal(shifts: list[tuple[list[str], str, str]], holidays: tuple[str, ...] = ()) -> Calendar:
    """A fleet calendar from (days, start, end) shifts."""
    return Calendar.model_validate(
        {
            "shifts": [{"days": d, "start": s, "end": e} for d, s, e in shifts],
            "holidays": list(holidays),
        }
    )


def utc(text: str) -> datetime:
    """An instant from ISO text with offset."""
    return datetime.fromisoformat(text).astimezone(UTC)


DAY_SHIFT = work_calendar(cal([(WEEKDAYS, "08:00", "20:00")], ("2026-10-01",)), "Asia/Shanghai")
NIGHT_SHIFT = work_calendar(cal([(WEEKDAYS, "22:00", "06:00")]), "Asia/Shanghai")


@pytest.mark.parametrize(
    ("calendar", "instant", "expected"),
    [
        # Tuesday 2026-12-01: 08:00 Shanghai is 00:00 UTC; a shift includes its start.
        (DAY_SHIFT, "2026-12-01T08:00:00+08:00", True),
        (DAY_SHIFT, "2026-12-01T07:59:59+08:00", False),
        (DAY_SHIFT, "2026-12-01T20:00:00+08:00", False),  # its end is not included
        (DAY_SHIFT, "2026-12-05T10:00:00+08:00", False),  # Saturday
        (DAY_SHIFT, "2026-10-01T10:00:00+08:00", False),  # a holiday (a Thursday)
        (DAY_SHIFT, "2026-10-02T10:00:00+08:00", True),
        # Night shift Friday 22:00 to Saturday 06:00: Saturday 03:00 is on it.
        (NIGHT_SHIFT, "2026-12-05T03:00:00+08:00", True),
        (NIGHT_SHIFT, "2026-12-05T23:00:00+08:00", False),  # no shift starts on Saturday
        (NIGHT_SHIFT, "2026-12-07T03:00:00+08:00", False),  # nor on Sunday night
        (NIGHT_SHIFT, "2026-12-07T22:30:00+08:00", True),  # Monday's night
        (None, "2026-12-05T03:00:00+08:00", True),  # no calendar: always scheduled
    ],
)
def test_is_scheduled(calendar: WorkCalendar | None, instant: str, expected: bool) -> None:
    """A factory is scheduled when one of its shifts covers the instant in its zone."""
    assert is_scheduled(calendar, utc(instant)) is expected


def test_holiday_stops_the_shift_that_starts_on_it_not_the_night_before() -> None:
    """A night shift that started the evening before a holiday runs to its end."""
    calendar = work_calendar(cal([(WEEKDAYS, "22:00", "06:00")], ("2026-10-01",)), "Asia/Shanghai")
    # Wednesday 30 Sep 22:00 to Thursday 1 Oct 06:00 runs; Thursday's own night does not.
    assert is_scheduled(calendar, utc("2026-10-01T05:00:00+08:00"))
    assert not is_scheduled(calendar, utc("2026-10-01T23:00:00+08:00"))


def test_seconds_of_a_window_crossing_a_shift_boundary() -> None:
    """A 5-minute window ending 2 minutes into the shift is scheduled for 120 s."""
    end = utc("2026-12-01T08:02:00+08:00")
    assert scheduled_seconds(DAY_SHIFT, end - timedelta(minutes=5), end) == 120.0
    times = factory_times({"f1": DAY_SHIFT, "f2": None}, as_of=end, window_s=300)
    assert (times["f1"].scheduled_at_end, times["f1"].scheduled_s) == (True, 120.0)
    assert (times["f2"].scheduled_at_end, times["f2"].scheduled_s) == (True, 300.0)


def test_night_shift_across_a_daylight_saving_change_is_an_hour_shorter() -> None:
    """In Berlin the night of 28 to 29 March 2026 loses an hour: 22:00 to 06:00 is 7 h."""
    berlin = work_calendar(cal([(["sat"], "22:00", "06:00")]), "Europe/Berlin")
    intervals = scheduled_intervals(berlin, utc("2026-03-28T00:00Z"), utc("2026-03-30T00:00Z"))
    assert intervals == [(utc("2026-03-28T21:00Z"), utc("2026-03-29T04:00Z"))]
    # And the autumn night gains one: 25 October 2026 is 9 h.
    autumn = scheduled_seconds(berlin, utc("2026-10-24T00:00Z"), utc("2026-10-26T00:00Z"))
    assert autumn == 9 * 3600


def test_overlapping_shifts_are_counted_once() -> None:
    """Two shifts that overlap schedule their union, not the sum."""
    calendar = work_calendar(
        cal([(["tue"], "06:00", "14:00"), (["tue"], "12:00", "22:00")]), "Asia/Shanghai"
    )
    day = utc("2026-12-01T00:00:00+08:00")
    assert scheduled_seconds(calendar, day, day + timedelta(days=1)) == 16 * 3600


def test_a_factory_calendar_replaces_its_parks() -> None:
    """The factory's own calendar wins; without one the park's holds; else none."""
    park, own = cal([(WEEKDAYS, "08:00", "20:00")]), cal([(["sat"], "08:00", "12:00")])
    assert calendar_in_force(park, own) is own
    assert calendar_in_force(park, None) is park
    assert calendar_in_force(None, None) is None


@pytest.mark.parametrize(
    ("park", "fragment"),
    [
        ("timezone: Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("timezone: ../../etc/passwd", "unknown time zone"),
        ("calendar: {shifts: [{days: [mon, fun], start: '08:00', end: '20:00'}]}", "'fun'"),
        ("calendar: {shifts: [{days: [mon], start: '8am', end: '20:00'}]}", "not a time HH:MM"),
        ("calendar: {shifts: [{days: [mon], start: '08:00', end: '24:00'}]}", "not a time"),
        ("calendar: {shifts: [{days: [], start: '08:00', end: '20:00'}]}", "at least 1"),
        ("calendar: {shifts: [{days: [mon, mon], start: '08:00', end: '20:00'}]}", "twice"),
        ("calendar: {shifts: [{days: [mon], start: '08:00', end: 20:00}]}", "in quotes"),
        ("calendar: {holidays: ['2026-13-01']}", "holidays"),
        ("calendar: {weekends: true}", "weekends"),
    ],
)
def test_fleet_refuses_a_bad_calendar_with_a_clear_reason(park: str, fragment: str) -> None:
    """A bad time zone, start, weekday or holiday is refused, saying which and why."""
    with pytest.raises(ValidationError) as info:
        parse_fleet(f"parks:\n  - id: p1\n    {park}\n")
    assert fragment in str(info.value)


def test_health_index_reweights_over_the_rates_that_are_not_null() -> None:
    """With operating_rate null the other weights are scaled to sum to 1."""
    components = health_components(None, 0.5, 1.0, 0.0)
    assert set(components) == {"capacity_utilization", "online_rate", "no_alarm"}
    assert sum(c.weight for c in components.values()) == pytest.approx(1.0)
    # (0.25 x 0.5 + 0.25 x 1 + 0.20 x 1) / 0.70 = 0.8214
    assert health_index(components) == 82.1


def test_history_bucket_counts_only_scheduled_minutes() -> None:
    """A 1 h bucket half on shift for f1: its capacity for 30 min, 90 factory-minutes."""
    calendar = work_calendar(cal([(["tue"], "08:30", "20:00")]), "Asia/Shanghai")
    start = utc("2026-12-01T08:00:00+08:00")
    slot = BucketSlot(ts=start, start=start, end=start + Bucket.HOUR.width)
    factories = {
        "f1": FactoryLines(lines=1, capacity_units_per_hour=1200, calendar=calendar),
        "f2": FactoryLines(lines=1, capacity_units_per_hour=600, calendar=None),
    }
    [plan] = bucket_plans([slot], factories)
    assert (plan.factory_minutes_scheduled, plan.factory_minutes_off_shift) == (90, 30)
    assert plan.capacity_units == 1200 * 0.5 + 600  # 1200 units
    assert plan.lines_off_shift == 0
    registry = RegistryCounts(devices=2, factories_with_lines=2, lines=2)
    sums = MinuteTotals(factories_operating=45, output_units=400.0)
    result = bucket_signals(slot, sums, registry, plan)
    assert result.signals.operating_rate == pytest.approx(45 / 90)
    assert result.signals.capacity_utilization == pytest.approx(400 / 1200)
    assert (result.factory_minutes_with_lines, result.factory_minutes_scheduled) == (120, 90)


def test_history_bucket_with_nothing_scheduled_has_null_rates() -> None:
    """A bucket wholly off shift: operating_rate and capacity_utilization are null."""
    calendar = work_calendar(cal([(["tue"], "08:00", "20:00")]), "Asia/Shanghai")
    start = utc("2026-12-01T02:00:00+08:00")
    slot = BucketSlot(ts=start, start=start, end=start + Bucket.HOUR.width)
    factories = {"f1": FactoryLines(lines=2, capacity_units_per_hour=1200, calendar=calendar)}
    [plan] = bucket_plans([slot], factories)
    assert plan.lines_off_shift == 2
    registry = RegistryCounts(devices=2, factories_with_lines=1, lines=2)
    result = bucket_signals(slot, MinuteTotals(output_units=50.0), registry, plan)
    assert result.signals.operating_rate is None
    assert result.signals.capacity_utilization is None
    assert "operating_rate" not in result.signals.components


_ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
_CLOCK = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from((0, 30)))
_SHIFT = st.tuples(
    st.lists(st.sampled_from(("mon", "tue", "wed", "thu", "fri", "sat", "sun")), min_size=1,
             max_size=7, unique=True),
    _CLOCK,
    _CLOCK,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    shifts=st.lists(_SHIFT, min_size=1, max_size=3),
    zone=st.sampled_from(_ZONES),
    offset_min=st.integers(0, 60 * 24 * 400),
    lengths=st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
)
def test_scheduled_seconds_add_up_and_agree_with_is_scheduled(
    shifts: list[tuple[list[str], str, str]],
    zone: str,
    offset_min: int,
    lengths: tuple[int, int],
) -> None:
    """Scheduled seconds add up over adjacent intervals and agree minute by minute.

    Shifts and zone offsets move on whole half-hours, so a minute is all in or all out.
    """
    calendar = work_calendar(cal(shifts, ("2026-03-29",)), zone)
    a = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=offset_min)
    b = a + timedelta(minutes=lengths[0])
    c = b + timedelta(minutes=lengths[1])
    total = scheduled_seconds(calendar, a, c)
    assert total == scheduled_seconds(calendar, a, b) + scheduled_seconds(calendar, b, c)
    minutes = sum(is_scheduled(calendar, a + timedelta(minutes=m)) for m in range(0, lengths[0], 7))
    sampled = sum(
        scheduled_seconds(calendar, t, t + timedelta(minutes=1)) / 60
        for t in (a + timedelta(minutes=m) for m in range(0, lengths[0], 7))
    )
    assert minutes == sampled
    spans = [(a, b), (b, c)]
    assert scheduled_seconds_each(calendar, spans) == [
        scheduled_seconds(calendar, lo, hi) for lo, hi in spans
    ]
