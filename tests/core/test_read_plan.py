"""Which minutes of a bucketed read the roll-up answers, and which raw rows do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.read_plan import Span, ceil_minute, floor_minute, plan_read

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
M15 = timedelta(minutes=15)


def at(minute: int, second: float = 0) -> datetime:
    """An instant on a test day, in minutes (and seconds) after 10:00."""
    return datetime(2026, 11, 26, 10, tzinfo=UTC) + timedelta(minutes=minute, seconds=second)


def test_minute_rounding() -> None:
    """Floor and ceiling to whole minutes leave whole minutes alone."""
    assert floor_minute(at(3, 59.9)) == at(3)
    assert ceil_minute(at(3, 0.001)) == at(4)
    assert floor_minute(at(3)) == ceil_minute(at(3)) == at(3)


def test_partial_edge_minutes_are_read_raw() -> None:
    """Whole minutes come from the roll-up, the partial ones at either end from raw rows."""
    plan = plan_read(at(0, 12), at(30, 5), width=M15, origin=ORIGIN, rollup_exact=True)
    assert (plan.r0, plan.r1, plan.raw_inside) == (at(1), at(30), ())
    assert plan.raw_spans == (Span(at(0, 12), at(1)), Span(at(30), at(30, 5)))


@pytest.mark.parametrize(
    ("width", "origin", "exact"),
    [
        (timedelta(seconds=90), ORIGIN, True),  # buckets split minutes
        (M15, ORIGIN + timedelta(seconds=30), True),  # so does a half-minute origin
        (M15, ORIGIN, False),  # the roll-up cannot answer the aggregate
    ],
)
def test_reads_are_raw_when_the_rollup_cannot_be_exact(
    width: timedelta, origin: datetime, *, exact: bool
) -> None:
    """Buckets that split minutes, or an aggregate the roll-up lacks, read raw rows only."""
    plan = plan_read(at(0), at(60), width=width, origin=origin, rollup_exact=exact)
    assert not plan.uses_rollup
    assert plan.raw_spans == (Span(at(0), at(60)),)


def test_unfolded_spans_become_raw_minutes() -> None:
    """A watermark shortens the roll-up span; pending minutes inside it are read raw."""
    unfolded = [
        Span(at(50, 20), datetime.max.replace(tzinfo=UTC)),  # the watermark
        Span(at(10, 5), at(10, 6)),  # a pending minute, late data
        Span(at(10, 30), at(11, 10)),  # overlaps the next minute: merged
        Span(at(-5), at(-4)),  # outside the request
    ]
    plan = plan_read(at(0), at(60), width=M15, origin=ORIGIN, rollup_exact=True, unfolded=unfolded)
    assert (plan.r0, plan.r1) == (at(0), at(50))
    assert plan.raw_inside == (Span(at(10), at(12)),)
    assert plan.raw_spans == (Span(at(10), at(12)), Span(at(50), at(60)))


def test_everything_unfolded_reads_raw() -> None:
    """When the fold has not reached the request's first whole minute, all is raw."""
    plan = plan_read(
        at(0, 30),
        at(9),
        width=M15,
        origin=ORIGIN,
        rollup_exact=True,
        unfolded=[Span(at(0), at(3)), Span(at(2), at(9))],
    )
    assert not plan.uses_rollup
    assert plan.raw_spans == (Span(at(0, 30), at(9)),)


def test_whole_quarters_come_from_the_quarter_rollup() -> None:
    """Buckets of whole quarters read quarters; the minutes around them and unfolded spans not.

    10:00:12-11:10:05 at 15 min: minutes 10:01-11:10, of which 10:15-10:45 are whole
    quarters before the pending minute 10:47 and 11:00-11:10 is not a whole quarter.
    """
    plan = plan_read(
        at(0, 12),
        at(70, 5),
        width=M15,
        origin=ORIGIN,
        rollup_exact=True,
        unfolded=[Span(at(47, 3), at(47, 4))],
    )
    assert (plan.r0, plan.r1, plan.raw_inside) == (at(1), at(70), (Span(at(47), at(48)),))
    assert plan.quarters == (Span(at(15), at(45)),)
    assert plan.minute_spans == (Span(at(1), at(15)), Span(at(45), at(47)), Span(at(48), at(70)))


@pytest.mark.parametrize(
    "origin",
    [
        ORIGIN + timedelta(minutes=5),  # a 5-minute grid: buckets split quarters
        ORIGIN - timedelta(hours=5, minutes=45),  # Kathmandu's midnight: a quarter grid
    ],
)
def test_quarters_only_on_the_quarter_grid(origin: datetime) -> None:
    """Buckets that split quarter hours read minutes only; an offset of whole quarters not."""
    plan = plan_read(at(0), at(120), width=timedelta(hours=1), origin=origin, rollup_exact=True)
    on_grid = not (origin - ORIGIN) % M15
    assert plan.quarters == ((Span(at(0), at(120)),) if on_grid else ())
    assert plan.minute_spans == (() if on_grid else (Span(at(0), at(120)),))
    five = plan_read(at(0), at(120), width=timedelta(minutes=5), origin=ORIGIN, rollup_exact=True)
    assert five.quarters == ()


@given(
    start_s=st.integers(0, 3 * 3600),
    length_s=st.integers(1, 3 * 3600),
    width_min=st.sampled_from([1, 5, 7, 15, 30, 60, 1440]),
    origin_min=st.sampled_from([0, 5, 15, 30, -345]),
    unfolded=st.lists(st.tuples(st.integers(0, 6 * 3600), st.integers(1, 600)), max_size=4),
)
def test_the_parts_tile_the_request(
    start_s: int, length_s: int, width_min: int, origin_min: int, unfolded: list[tuple[int, int]]
) -> None:
    """Raw spans, minutes and quarters cover the request once, each quarter in one bucket."""
    start = at(0, start_s)
    end = start + timedelta(seconds=length_s)
    width, origin = timedelta(minutes=width_min), ORIGIN + timedelta(minutes=origin_min)
    spans = [Span(at(0, a), at(0, a + n)) for a, n in unfolded]
    plan = plan_read(start, end, width=width, origin=origin, rollup_exact=True, unfolded=spans)
    parts = sorted([*plan.raw_spans, *plan.minute_spans, *plan.quarters], key=lambda s: s.lo)
    assert all(p.lo < p.hi for p in parts)
    assert [p.lo for p in parts][1:] == [p.hi for p in parts][:-1]  # no gap, no overlap
    assert (parts[0].lo, parts[-1].hi) == (start, end)
    if plan.quarters:  # buckets are unions of quarters
        assert width_min % 15 == 0
        assert origin_min % 15 == 0
    for q in plan.quarters:
        assert not (q.lo - ORIGIN) % M15
        assert not (q.hi - ORIGIN) % M15
        assert not any(s.lo < q.hi and q.lo < s.hi for s in spans)  # nothing unfolded in it
    for m in plan.minute_spans:
        assert (floor_minute(m.lo), floor_minute(m.hi)) == (m.lo, m.hi)
