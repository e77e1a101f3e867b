"""A device's readings of one metric: raw points, or buckets from roll-ups and raw rows.

```
GET …/readings?bucket&agg ─▶ rollup_unfolded()  (the fold's seam: what is not folded yet)
        └─▶ plan_read (services/core/read_plan.py)
              ├─ whole minutes, folded, agg the roll-up holds ─▶ readings_1m rows
              └─ partial edge minutes, unfolded minutes, else ─▶ readings rows
                       └──── one row shape, one aggregate per bucket ────┘
```
Every part is brought to the roll-up's row shape (a raw reading is a minute of one
reading), so one aggregate per bucket combines them; the answer equals the aggregate over
raw rows (``tests/storage/test_device_readings.py``). Over 30 days at 15 min that reads
43,200 rows of readings_1m instead of 43,200 raw rows for a device sampled once a minute,
and a sixtieth of the raw rows for one sampled every second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.multirange import Multirange
from psycopg.types.range import Range

from schemas.api import Point
from services.core.aggregates import Agg
from services.core.read_plan import ReadPlan, Span, plan_read
from services.storage.pages import cursor_pages

# Fixed SQL per aggregate over the parts' columns (a raw reading is a part with n = 1 and
# sum = min = max = first_value = last_value = value); never built from user text. avg is
# sum over count, as PostgreSQL's avg(float8) computes it. An aggregate a kind has no entry
# for is refused; every entry here is exact from the roll-up's columns, so no kind and
# aggregate falls back to raw rows today — ``plan_read`` takes ``rollup_exact`` for the
# day one does.
_NUMERIC_AGG_SQL = {
    Agg.AVG: "sum(sum) / sum(n)",
    Agg.MIN: "min(min)",
    Agg.MAX: "max(max)",
    Agg.SUM: "sum(sum)",
    Agg.COUNT: "sum(n)::double precision",
    Agg.FIRST: "first(first_value, first_ts)",
    Agg.LAST: "last(last_value, last_ts)",
}
_STATE_AGG_SQL = {
    Agg.COUNT: "sum(n)::text",
    Agg.FIRST: "first(first_text, first_ts)",
    Agg.LAST: "last(last_text, last_ts)",
}
# The aggregates a device's readings take (a numeric metric), and those a state metric takes.
AGGS = tuple(_NUMERIC_AGG_SQL)
STATE_AGGS = tuple(_STATE_AGG_SQL)

# Bucket origin: a Monday, as TimescaleDB's default; in the request's time zone.
_ORIGIN = datetime(2000, 1, 3)  # noqa: DTZ001 - given the request's tzinfo below

_RAW_PART = """
    SELECT ts, 1 AS n, value AS sum, value AS min, value AS max, ts AS first_ts,
           value AS first_value, value_text AS first_text, ts AS last_ts,
           value AS last_value, value_text AS last_text
    FROM readings
    WHERE device_id = %(device)s AND metric = %(metric)s
"""

_PARTS_COLUMNS = (
    "n, sum, min, max, first_ts, first_value, first_text, last_ts, last_value, last_text"
)

# Whole quarters from readings_15m (one range scan, the few unfolded holes filtered out),
# the other roll-up minutes from readings_1m (a range scan per span: the partial quarters
# at either end and around unfolded spans), and three raw branches (head, unfolded minutes
# inside, tail) rather than one OR, so each is a plain index range scan with chunk
# exclusion.
_BUCKETS_SQL = f"""
WITH parts AS (
    SELECT quarter AS ts, {_PARTS_COLUMNS}
    FROM readings_15m
    WHERE device_id = %(device)s AND metric = %(metric)s
      AND quarter >= %(q0)s AND quarter < %(q1)s
      AND quarter <@ %(quarters)s::tstzmultirange
    UNION ALL
    SELECT r.minute AS ts, {", ".join(f"r.{c.strip()}" for c in _PARTS_COLUMNS.split(","))}
    FROM unnest(%(m_lo)s::timestamptz[], %(m_hi)s::timestamptz[]) AS s(lo, hi)
    CROSS JOIN LATERAL (
        SELECT * FROM readings_1m m
        WHERE m.device_id = %(device)s AND m.metric = %(metric)s
          AND m.minute >= s.lo AND m.minute < s.hi
    ) r
    UNION ALL
    {_RAW_PART} AND ts >= %(start)s AND ts < %(r0)s
    UNION ALL
    {_RAW_PART} AND ts >= %(i0)s AND ts < %(i1)s AND ts <@ %(inside)s::tstzmultirange
    UNION ALL
    {_RAW_PART} AND ts >= %(r1)s AND ts < %(end)s
), buckets AS (
    SELECT time_bucket(%(bucket)s, ts, %(origin)s) AS bucket, {{expr}} AS value
    FROM parts
    GROUP BY 1
), grid AS (
    SELECT generate_series(
        time_bucket(%(bucket)s, %(start)s::timestamptz, %(origin)s),
        %(end)s::timestamptz - interval '1 microsecond', %(bucket)s) AS bucket
)
SELECT grid.bucket AS ts, buckets.value
FROM grid LEFT JOIN buckets USING (bucket)
ORDER BY grid.bucket
"""

# The seam between roll-up maintenance and these reads (migration 0022): the spans of a
# device metric whose readings may not all be folded into readings_1m yet, clipped to the
# request here (a watermark's open end may be 'infinity' or null, which Python cannot hold).
_UNFOLDED_SQL = """
SELECT greatest(lo, %(start)s), least(coalesce(hi, 'infinity'), %(end)s)
FROM rollup_unfolded(%(device)s, %(metric)s, %(start)s, %(end)s)
WHERE lo < %(end)s AND coalesce(hi, 'infinity') > %(start)s
ORDER BY 1
"""


_RAW_SQL = """
SELECT ts, coalesce(value_text, value::text) AS text, value
FROM readings
WHERE device_id = %s AND metric = %s AND ts >= %s AND ts < %s
ORDER BY ts LIMIT %s
"""

# A page of points: (ts, value), the value a float, a state's text, or None.
PointRow = tuple[datetime, float | str | None]


def _point_value(text: str | None, value: float | None) -> float | str | None:
    return value if value is not None else text


async def raw_readings(
    conn: AsyncConnection,
    *,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[Point]:
    """Raw points in [start, end), oldest first."""
    async with conn.cursor() as cur:
        await cur.execute(_RAW_SQL, (device_id, metric, start, end, limit))
        return [
            Point(ts=ts, value=_point_value(text, value))
            for ts, text, value in await cur.fetchall()
        ]


async def raw_reading_pages(
    conn: AsyncConnection,
    *,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    limit: int | None,
    page_rows: int,
) -> AsyncIterator[list[PointRow]]:
    """The points of ``raw_readings`` (no limit when None), ``page_rows`` at a time."""
    params = (device_id, metric, start, end, limit)
    async for page in cursor_pages(conn, "raw_readings", _RAW_SQL, params, page_rows):
        yield [(ts, _point_value(text, value)) for ts, text, value in page]


async def unfolded_spans(
    conn: AsyncConnection, device_id: str, metric: str, start: datetime, end: datetime
) -> list[Span]:
    """The spans of ``[start, end)`` whose readings readings_1m may not hold yet."""
    async with conn.cursor() as cur:
        await cur.execute(
            _UNFOLDED_SQL, {"device": device_id, "metric": metric, "start": start, "end": end}
        )
        return [Span(lo, hi) for lo, hi in await cur.fetchall()]


async def plan_buckets(
    conn: AsyncConnection,
    *,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    rollup_exact: bool = True,
) -> ReadPlan:
    """Decide which minutes of the request come from readings_1m (see ``plan_read``)."""
    origin = _ORIGIN.replace(tzinfo=start.tzinfo)
    plan = plan_read(start, end, width=bucket, origin=origin, rollup_exact=rollup_exact)
    if not plan.uses_rollup:
        return plan
    unfolded = await unfolded_spans(conn, device_id, metric, plan.r0, plan.r1)
    if not unfolded:
        return plan
    return plan_read(
        start, end, width=bucket, origin=origin, rollup_exact=rollup_exact, unfolded=unfolded
    )


@dataclass(frozen=True, slots=True)
class BucketRequest:
    """One device metric's buckets over ``[start, end)``: width, aggregate, and its kind."""

    device_id: str
    metric: str
    start: datetime
    end: datetime
    bucket: timedelta
    agg: Agg
    state_metric: bool


def _multirange(spans: tuple[Span, ...]) -> Multirange[datetime]:
    return Multirange([Range(s.lo, s.hi, "[)") for s in spans])


async def _bucket_query(conn: AsyncConnection, ask: BucketRequest) -> tuple[bytes, dict[str, Any]]:
    """The statement and parameters of one device metric's buckets (see ``bucketed_readings``).

    Raises:
        ValueError: the aggregate does not apply to a state metric.
    """
    table = _STATE_AGG_SQL if ask.state_metric else _NUMERIC_AGG_SQL
    expr = table.get(ask.agg)
    if expr is None:
        raise ValueError(
            f"agg {ask.agg} does not apply to a state metric; use count, first or last"
        )
    plan = await plan_buckets(
        conn,
        device_id=ask.device_id,
        metric=ask.metric,
        start=ask.start,
        end=ask.end,
        bucket=ask.bucket,
    )
    inside, quarters = plan.raw_inside, plan.quarters
    params = {
        "bucket": ask.bucket,
        "origin": _ORIGIN.replace(tzinfo=ask.start.tzinfo),
        "device": ask.device_id,
        "metric": ask.metric,
        "start": ask.start,
        "end": ask.end,
        "r0": plan.r0,
        "r1": plan.r1,
        "q0": quarters[0].lo if quarters else plan.r0,
        "q1": quarters[-1].hi if quarters else plan.r0,
        "quarters": _multirange(quarters),
        "m_lo": [s.lo for s in plan.minute_spans],
        "m_hi": [s.hi for s in plan.minute_spans],
        "i0": inside[0].lo if inside else plan.r0,
        "i1": inside[-1].hi if inside else plan.r0,
        "inside": _multirange(inside),
    }
    sql = _BUCKETS_SQL.format(expr=expr)  # expr comes from the fixed tables above
    return sql.encode(), params


async def bucketed_readings(conn: AsyncConnection, ask: BucketRequest) -> list[PointRow]:
    """One point per bucket in [start, end), each bucket's ts its start; empty buckets are null.

    Plain rows, not ``Point`` models: 30 days at 15 min are 2,881 points, and building a
    model for each cost about as much as the query.

    Whole minutes come from readings_1m where it is exact, the rest from raw readings; the
    answer is the aggregate over the raw readings either way.

    Raises:
        ValueError: the aggregate does not apply to a state metric.
    """
    sql, params = await _bucket_query(conn, ask)
    async with conn.cursor() as cur:
        await cur.execute(sql, params)
        return [(ts, value) for ts, value in await cur.fetchall()]


async def bucketed_reading_pages(
    conn: AsyncConnection, ask: BucketRequest, *, page_rows: int
) -> AsyncIterator[list[PointRow]]:
    """The points of ``bucketed_readings``, ``page_rows`` at a time (a server-side cursor).

    Raises:
        ValueError: the aggregate does not apply to a state metric.
    """
    sql, params = await _bucket_query(conn, ask)
    async for page in cursor_pages(conn, "bucketed_readings", sql, params, page_rows):
        yield [(ts, value) for ts, value in page]
