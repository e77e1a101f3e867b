"""Which minutes of a bucketed read the roll-up answers, and which raw rows do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
