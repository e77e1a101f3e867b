"""History buckets: alignment, clipping and the signals of one bucket, worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.history import (
    Bucket,
    BucketSlot,
    MinuteTotals,
    RegistryCounts,
    bucket_signals,
    bucket_slots,
    bucket_start,
    operating_in_shift_minutes,
    shift_hours,
)
from services.core.signals import Signal

DAY = datetime(2026, 11, 26, tzinfo=UTC)


def test_buckets_align_to_utc_and_clip_to_the_request() -> None:
    """Buckets start on their width's grid; the first and last are clipped to [start, end)."""

    def t(minute: int) -> datetime:
        return DAY.replace(hour=10, minute=minute)

    slots = bucket_slots(t(7), t(40), Bucket("15m"))
    assert slots == [
        BucketSlot(t(0), t(7), t(15)),
        BucketSlot(t(15), t(15), t(30)),
        BucketSlot(t(30), t(30), t(40)),
    ]
    assert [s.minutes for s in slots] == [8, 15, 10]


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("1m", DAY.replace(hour=13, minute=59)),
        ("5m", DAY.replace(hour=13, minute=55)),
        ("15m", DAY.replace(hour=13, minute=45)),
        ("1h", DAY.replace(hour=13)),
        ("1d", DAY),
    ],
)
def test_bucket_start(bucket: str, expected: datetime) -> None:
    """A bucket holding 13:59:30 starts on its width's UTC grid."""
    assert bucket_start(DAY.replace(hour=13, minute=59, second=30), Bucket(bucket)) == expected


def test_bad_ranges_are_refused() -> None:
    """Start must precede end, and both must be whole minutes."""
    with pytest.raises(ValueError, match="before"):
        bucket_slots(DAY, DAY, Bucket.HOUR)
    with pytest.raises(ValueError, match="whole minutes"):
        bucket_slots(DAY + timedelta(seconds=5), DAY + timedelta(hours=1), Bucket.HOUR)


def test_one_bucket_worked_by_hand() -> None:
    """A 15-minute bucket of a park with 10 devices, 2 factories with lines and 3 lines."""
    slot = BucketSlot(DAY, DAY, DAY + timedelta(minutes=15))
    registry = RegistryCounts(
        devices=10,
        factories_with_lines=2,
        lines=3,
        line_capacity_units_per_hour=1200.0,
        meters=2,
        energy_devices=2,
        alarm_devices=8,
    )
    sums = MinuteTotals(
        devices_reporting=120,  # of 150 device-minutes
        lines_reporting_state=40,
        lines_running=30,
        factories_operating=24,  # of 30 factory-minutes
        lines_reporting_output=45,
        output_units=150.0,  # of 1200 u/h x 0.25 h = 300 units
        meters_reporting_power=30,
        power_kw=1500.0,  # kW x minutes: mean 100 kW
        energy_reporting=30,
        energy_kwh=25.0,
        alarm_devices_reporting=100,
        devices_in_alarm=12,  # of 120 online device-minutes
    )
    result = bucket_signals(slot, sums, registry)
    s = result.signals
    assert s.online_rate == pytest.approx(0.8)
    assert s.operating_rate == pytest.approx(0.8)
    assert s.capacity_utilization == pytest.approx(0.5)
    assert s.power_kw == pytest.approx(100.0)
    assert s.energy_kwh == pytest.approx(25.0)
    assert s.energy_intensity_kwh_per_unit == pytest.approx(25 / 150)
    assert s.alarm_rate == pytest.approx(0.1)
    # 100 x (0.3 x 0.8 + 0.25 x 0.5 + 0.25 x 0.8 + 0.2 x 0.9) = 74.5
    assert s.health_index == 74.5
    assert result.coverage[Signal.OPERATING_RATE].share == pytest.approx(40 / 45)
    assert result.coverage[Signal.ENERGY_INTENSITY].devices == 2 * 15 + 3 * 15


def test_minute_totals_add_up() -> None:
    """Sums of two bucket parts equal the sums of the whole."""
    a = MinuteTotals(devices_reporting=3, output_units=1.5, devices_in_alarm=1)
    b = MinuteTotals(devices_reporting=2, output_units=2.0, power_kw=4.0)
    assert a + b == MinuteTotals(
        devices_reporting=5, output_units=3.5, devices_in_alarm=1, power_kw=4.0
    )


def _at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def test_shift_hours_worked_by_hand() -> None:
    """Whole hours in shift become spans; hours a shift begins or ends inside are split.

    Calendar 0 works 08:00-12:00 and 13:30-15:00; calendar 1 works 10:15-10:45 (inside one
    hour) and from 22:00 past the end of the request at 20:00; calendar 2 nothing.
    """
    scheduled = [
        [(_at(8), _at(12)), (_at(13, 30), _at(15))],
        [(_at(10, 15), _at(10, 45)), (_at(22), _at(30))],
        [],
    ]
    shifts = shift_hours(scheduled, _at(6), _at(20))
    assert shifts.full == (((_at(8), _at(12)), (_at(14), _at(15))), (), ())
    assert shifts.split == frozenset({_at(13), _at(10)})


def test_shift_hours_clip_to_the_request() -> None:
    """A shift that began before the first hour or ends after the last is cut at them."""
    shifts = shift_hours([[(_at(-3, 30), _at(2, 30)), (_at(3), _at(9, 10))]], _at(0), _at(5))
    assert shifts.full == (((_at(0), _at(2)), (_at(3), _at(5))),)
    assert shifts.split == frozenset({_at(2)})


@st.composite
def _intervals(draw: st.DrawFn) -> list[tuple[datetime, datetime]]:
    """Sorted, merged intervals on whole minutes of one day, as a calendar yields them."""
    cuts = sorted(set(draw(st.lists(st.integers(0, 24 * 60), max_size=10))))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    return [(DAY + timedelta(minutes=a), DAY + timedelta(minutes=b)) for a, b in pairs]


@given(
    scheduled=st.lists(_intervals(), max_size=3),
    first=st.integers(0, 23),
    hours=st.integers(1, 24),
)
def test_shift_hours_agree_with_the_minutes(
    scheduled: list[list[tuple[datetime, datetime]]], first: int, hours: int
) -> None:
    """An hour is whole in shift iff all its minutes are; split iff only some are, anywhere."""
    lo, hi = _at(first), _at(min(first + hours, 24))
    shifts = shift_hours(scheduled, lo, hi)
    assert all(lo <= h < hi for h in shifts.split)
    hour = lo
    while hour < hi:
        split = False
        for intervals, spans in zip(scheduled, shifts.full, strict=True):
            minutes = [hour + timedelta(minutes=m) for m in range(60)]
            inside = sum(any(a <= m < b for a, b in intervals) for m in minutes)
            assert (inside == 60) == any(a <= hour < b for a, b in spans), hour
            split = split or 0 < inside < 60
        assert (hour in shifts.split) == split, hour
        hour += timedelta(hours=1)


def test_operating_minutes_count_only_inside_their_factorys_shifts() -> None:
    """Each operating factory counts in a minute its own calendar schedules, by the bucket.

    f1 follows calendar 0 (10:00-10:30), f2 calendar 1 (10:15-11:00); "gone" is no longer a
    factory with lines. A minute folded before the list was kept counts the roll-up's 5.
    """
    scheduled = [[(_at(10), _at(10, 30))], [(_at(10, 15), _at(11))]]
    follows = {"f1": 0, "f2": 1}
    minutes: list[tuple[datetime, list[str] | None, int]] = [
        (_at(10, 5), ["f1", "f2", "gone"], 3),  # f2 not yet in shift
        (_at(10, 20), ["f1", "f2"], 2),
        (_at(10, 40), ["f1", "f2"], 2),  # f1's shift is over
        (_at(10, 50), None, 5),
        (_at(11, 0), ["f1", "f2"], 2),  # nobody's shift
    ]
    totals = operating_in_shift_minutes(minutes, scheduled, follows, Bucket("15m"))
    assert totals == {_at(10): 1, _at(10, 15): 2, _at(10, 30): 1, _at(10, 45): 5, _at(11): 0}
