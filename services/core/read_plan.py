"""Which part of a device's bucketed readings the per-minute roll-up answers, and which raw rows.

```
[start ─ raw head ─┬─────────── roll-up minutes (readings_1m) ───────────┬─ raw tail ─ end)
                   r0 ├─ whole quarters (readings_15m) ─┤└ raw inside ┘   r1
```
A bucket of whole minutes, aligned to a whole-minute origin, is a union of whole minutes,
so its aggregate combines exactly from the minutes' roll-ups and the raw rows of the
partial edge minutes. A minute the roll-up has not folded yet (``unfolded``) is read from
raw rows too; one it may not answer at all (an aggregate it holds no column for) makes the
whole request raw. Likewise a bucket of whole quarter hours on the quarter-hour grid is a
union of quarters: the quarters wholly inside the roll-up minutes (none of their minutes
unfolded) come from the per-quarter roll-up, the other roll-up minutes from readings_1m.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)
QUARTER = timedelta(minutes=15)
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
    head is the whole request. ``quarters``: the parts of the roll-up minutes read as whole
    quarter hours (from readings_15m); ``minute_spans`` the rest (from readings_1m).
    """

    start: datetime
    end: datetime
    r0: datetime
    r1: datetime
    raw_inside: tuple[Span, ...]
    quarters: tuple[Span, ...] = ()
    minute_spans: tuple[Span, ...] = ()

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
    return _whole(width, origin, MINUTE)


def _whole(width: timedelta, origin: datetime, unit: timedelta) -> bool:
    """Whether buckets of ``width`` from ``origin`` are unions of ``unit``s of the UTC grid."""
    return width > timedelta(0) and not width % unit and not (origin - _EPOCH) % unit


def _split_quarters(lo: datetime, hi: datetime) -> tuple[Span | None, list[Span]]:
    """The whole quarter hours of ``[lo, hi)`` (None if none), and the minutes around them."""
    q0 = lo + (_EPOCH - lo) % QUARTER  # the first quarter boundary at or after lo
    q1 = hi - (hi - _EPOCH) % QUARTER
    if q0 >= q1:
        return None, [Span(lo, hi)]
    return Span(q0, q1), [s for s in (Span(lo, q0), Span(q1, hi)) if s.lo < s.hi]


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
    # The roll-up minutes between the raw spans inside, each split into whole quarters
    # (when buckets are unions of them) and the minutes around them.
    quarters: list[Span] = []
    minutes: list[Span] = []
    by_quarter = _whole(width, origin, QUARTER)
    edges = [r0, *(x for span in merged for x in (span.lo, span.hi)), r1]
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):
        whole, around = _split_quarters(lo, hi) if by_quarter else (None, [Span(lo, hi)])
        if whole is not None:
            quarters.append(whole)
        minutes.extend(around)
    return ReadPlan(start, end, r0, r1, tuple(merged), tuple(quarters), tuple(minutes))
