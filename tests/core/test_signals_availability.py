"""Online state as a time series: transitions, reasons and online share."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.availability import (
    Availability,
    AvailabilityReason,
    ReadingSpan,
    StatusEvent,
    Transition,
    availability,
)
from services.core.signals import StatusPoint, offline_reason

START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
T = timedelta(seconds=90)
R = AvailabilityReason


def hm(minute: int, second: int = 0) -> datetime:
    """Return 10:mm:ss on the test day."""
    return START + timedelta(minutes=minute, seconds=second)


def every_30s(first: datetime, last: datetime) -> list[datetime]:
    """Readings every 30 s from first to last inclusive."""
    out = []
    ts = first
    while ts <= last:
        out.append(ts)
        ts += timedelta(seconds=30)
    return out


READINGS = (
    every_30s(hm(0), hm(10))
    + every_30s(hm(20), hm(30))
    + every_30s(hm(40), hm(50))
)  # fmt: skip


def statuses_for(
    events: list[tuple[datetime, bool]], readings: list[datetime]
) -> list[StatusEvent]:
    """Status events, each offline one with the first reading strictly after it."""
    ordered = sorted(readings)
    out = []
    for ts, online in events:
        i = bisect.bisect_right(ordered, ts)
        resumed = ordered[i] if not online and i < len(ordered) else None
        out.append(StatusEvent(ts=ts, online=online, resumed_at=resumed))
    return out


STATUSES = statuses_for([(hm(30, 10), False), (hm(50, 20), False), (hm(50, 40), True)], READINGS)


def minute_spans(readings: list[datetime]) -> list[ReadingSpan]:
    """Spans as the per-minute roll-up gives them: first and last reading of each minute."""
    by_minute: dict[datetime, list[datetime]] = {}
    for ts in readings:
        by_minute.setdefault(ts.replace(second=0, microsecond=0), []).append(ts)
    return [ReadingSpan(min(v), max(v)) for v in by_minute.values()]


EXPECTED = (
    Transition(hm(11, 30), False, R.SILENCE),  # last reading 10:10:00 + 90 s
    Transition(hm(20), True, R.READING),
    Transition(hm(30, 10), False, R.LAST_WILL),  # sent after the 10:30:00 reading
    Transition(hm(40), True, R.READING),
    Transition(hm(50, 20), False, R.LAST_WILL),
    Transition(hm(50, 40), True, R.STATUS),  # back online; 10:50:00 is only 40 s old
    Transition(hm(51, 30), False, R.SILENCE),
)


@pytest.mark.parametrize(
    "spans",
    [
        [ReadingSpan(ts, ts) for ts in READINGS],
        minute_spans(READINGS),
    ],
    ids=["raw-readings", "minute-spans"],
)
def test_worked_hour_of_one_device(spans: list[ReadingSpan]) -> None:
    """Silence, last will, readings and an online status give the hand-worked timeline."""
    result = availability(spans, STATUSES, start=START, end=END, timeout=T)
    assert result.online_at_start
    assert result.transitions == EXPECTED
    # Online 10:00-10:11:30, 10:20-10:30:10, 10:40-10:50:20, 10:50:40-10:51:30.
    assert result.online_s == 690 + 610 + 620 + 50
    assert result.online_share == pytest.approx(1970 / 3600)


def test_an_old_last_will_is_superseded_by_newer_readings() -> None:
    """An offline status sent before the newest reading does not take the device offline."""
    readings = every_30s(hm(0), hm(5))
    statuses = statuses_for([(hm(2, 10), False)], readings)
    result = availability(
        [ReadingSpan(t, t) for t in readings], statuses, start=START, end=hm(6), timeout=T
    )
    # Offline 10:02:10 to the next reading at 10:02:30, then online to the end.
    assert result.transitions == (
        Transition(hm(2, 10), False, R.LAST_WILL),
        Transition(hm(2, 30), True, R.READING),
    )
    assert result.online_s == 360 - 20


def test_interval_starting_offline() -> None:
    """A device with no reading before start is offline at start."""
    readings = [hm(5)]
    result = availability(
        [ReadingSpan(t, t) for t in readings], [], start=START, end=hm(10), timeout=T
    )
    assert not result.online_at_start
    assert result.transitions == (
        Transition(hm(5), True, R.READING),
        Transition(hm(6, 30), False, R.SILENCE),
    )
    assert result.online_s == 90


def test_state_at_start_comes_from_earlier_events() -> None:
    """Events before start decide the state at start; only later changes are listed."""
    readings = every_30s(hm(0), hm(20))
    statuses = statuses_for([(hm(20, 5), False)], readings)
    result = availability(
        [ReadingSpan(t, t) for t in readings], statuses, start=hm(21), end=hm(30), timeout=T
    )
    assert not result.online_at_start
    assert result.transitions == ()
    assert result.online_share == 0.0


def test_no_events_at_all() -> None:
    """A device that never reported is offline throughout."""
    result = availability([], [], start=START, end=END, timeout=T)
    assert result == Availability(START, END, False, (), 0.0)


@settings(max_examples=300, deadline=None)
@given(
    reading_s=st.lists(st.integers(0, 1800), max_size=40, unique=True),
    status_list=st.lists(st.tuples(st.integers(0, 1800), st.booleans()), max_size=6),
    probes=st.lists(st.integers(0, 1799), min_size=1, max_size=30),
)
def test_timeline_agrees_with_the_live_rule(
    reading_s: list[int], status_list: list[tuple[int, bool]], probes: list[int]
) -> None:
    """At any instant the timeline's state is what the live online rule says."""
    readings = sorted(START + timedelta(seconds=s) for s in reading_s)
    unique_statuses = dict(status_list)  # one message per instant
    events = sorted((START + timedelta(seconds=s), on) for s, on in unique_statuses.items())
    statuses = statuses_for(events, readings)
    result = availability(
        [ReadingSpan(t, t) for t in readings], statuses, start=START, end=hm(30), timeout=T
    )
    for probe in probes:
        t = START + timedelta(seconds=probe + 0.5)  # between boundaries
        state = result.online_at_start
        for transition in result.transitions:
            if transition.ts <= t:
                state = transition.online
        i = bisect.bisect_right(readings, t)
        last = readings[i - 1] if i else None
        j = bisect.bisect_right([e[0] for e in events], t)
        status = StatusPoint(events[j - 1][1], events[j - 1][0]) if j else None
        expected = offline_reason(last, status, t, T.total_seconds()) is None
        assert state == expected, (t, last, status)
