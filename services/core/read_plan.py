"""Which part of a device's bucketed readings the per-minute roll-up answers, and which raw rows.

```
[start ─ raw head ─┬─────────── roll-up minutes (readings_1m) ───────────┬─ raw tail ─ end)
                   r0          └ raw inside: minutes not folded yet ┘    r1
```
A bucket of whole minutes, aligned to a whole-minute origin, is a union of whole minutes,
so its aggregate combines exactly from the minutes' roll-ups and the raw rows of the
partial edge minutes. A minute the roll-up has not folded yet (``unfolded``) is read from
raw rows too; one it may not answer at all (an aggregate it holds no column for) makes the
whole request raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Span:
    """The half-open interval ``[lo, hi)`` of measured time."""

    lo: datetime
    hi: datetime


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Roll-up minutes ``[r0, r1)`` except ``raw_inside``; raw rows for the rest of the request.

    ``r0 == r1`` when no minute comes from the roll-up; then both equal ``end`` and the raw
    head is the whole request.
    """

    start: datetime
    end: datetime
    r0: datetime
    r1: datetime
    raw_inside: tuple[Span, ...]

    @property
    def uses_rollup(self) -> bool:
        """Whether any minute is read from the roll-up."""
        return self.r0 < self.r1

    @property
    def raw_spans(self) -> tuple[Span, ...]:
        """Every span read from raw rows, in time order (empty spans left out)."""
        spans = (Span(self.start, self.r0), *self.raw_inside, Span(self.r1, self.end))
        return tuple(s for s in spans if s.lo < s.hi)


def floor_minute(ts: datetime) -> datetime:
    """The start of the minute holding ``ts``."""
    return ts - (ts - _EPOCH) % MINUTE


def ceil_minute(ts: datetime) -> datetime:
    """The first minute boundary at or after ``ts``."""
    floor = floor_minute(ts)
    return floor if floor == ts else floor + MINUTE


def whole_minute_buckets(width: timedelta, origin: datetime) -> bool:
    """Whether buckets of ``width`` from ``origin`` are unions of whole minutes."""
    return width > timedelta(0) and not width % MINUTE and not (origin - _EPOCH) % MINUTE


def plan_read(
    start: datetime,
    end: datetime,
    *,
    width: timedelta,
    origin: datetime,
    rollup_exact: bool,
    unfolded: Sequence[Span] = (),
) -> ReadPlan:
    """Split ``[start, end)`` into roll-up minutes and raw spans.

    Args:
        start: Inclusive start of the request.
        end: Exclusive end of the request.
        width: Bucket width.
        origin: Bucket origin (as ``time_bucket``'s).
        rollup_exact: Whether the roll-up holds what the aggregate needs for this metric.
        unfolded: Spans whose readings may not all be in the roll-up yet (from the
            roll-up's watermark and its pending keys); any minute they touch is read raw.

    Returns:
        The plan; all raw when the buckets are not whole minutes or the roll-up cannot
        answer the aggregate.
    """
    r0, r1 = ceil_minute(start), floor_minute(end)
    if not rollup_exact or not whole_minute_buckets(width, origin) or r0 >= r1:
        return ReadPlan(start, end, end, end, ())
    # Unfolded spans, clipped to the roll-up span, widened to whole minutes and merged.
    merged: list[Span] = []
    for span in sorted(unfolded, key=lambda s: s.lo):
        lo, hi = floor_minute(max(span.lo, r0)), ceil_minute(min(span.hi, r1))
        if lo >= hi:
            continue
        if merged and lo <= merged[-1].hi:
            merged[-1] = Span(merged[-1].lo, max(merged[-1].hi, hi))
        else:
            merged.append(Span(lo, hi))
    # Those touching an end of the roll-up span shrink it (the raw head and tail grow).
    if merged and merged[-1].hi == r1:
        r1 = merged.pop().lo
    if merged and merged[0].lo == r0:
        r0 = merged.pop(0).hi
    if r0 >= r1:
        return ReadPlan(start, end, end, end, ())
    return ReadPlan(start, end, r0, r1, tuple(merged))
