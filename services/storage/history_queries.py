"""Read queries over the roll-ups: park signal history and park metric aggregates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.core.aggregates import Agg
from services.core.calendar import scheduled_intervals
from services.core.history import (
    BUCKET_ORIGIN,
    Bucket,
    BucketSignals,
    FactoryLines,
    MinuteTotals,
    bucket_plans,
    bucket_signals,
    bucket_slots,
    bucket_start,
    registry_counts,
)
from services.core.registry import ParkInfo
from services.core.signals import LINE_TYPE
from services.storage.pages import cursor_pages

_SUM_COLUMNS = [f.name for f in fields(MinuteTotals)]

# Sums typed as MinuteTotals' fields (a sum of bigint would otherwise come back numeric).
_SUMS = ", ".join(
    f"sum({f.name})::{'double precision' if f.type == 'float' else 'bigint'} AS {f.name}"
    for f in fields(MinuteTotals)
)
_COLUMNS = ", ".join(_SUM_COLUMNS)

# Buckets under an hour: the park's minutes.
_HISTORY_MINUTES_SQL = f"""
SELECT time_bucket(%(width)s, minute, %(origin)s) AS bucket, {_SUMS}
FROM park_1m
WHERE park_id = %(park)s AND minute >= %(start)s AND minute < %(end)s
GROUP BY 1
ORDER BY 1
"""

# Buckets of an hour or more: the park's whole hours in [h1, h2), and its minutes in the
# partial hours at either end of the request.
_HISTORY_HOURS_SQL = f"""
SELECT time_bucket(%(width)s, t, %(origin)s) AS bucket, {_SUMS}
FROM (
    SELECT hour AS t, {_COLUMNS} FROM park_1h
    WHERE park_id = %(park)s AND hour >= %(h1)s AND hour < %(h2)s
    UNION ALL
    SELECT minute AS t, {_COLUMNS} FROM park_1m
    WHERE park_id = %(park)s
      AND ((minute >= %(start)s AND minute < %(h1)s) OR (minute >= %(h2)s AND minute < %(end)s))
) parts
GROUP BY 1
ORDER BY 1
"""

# Planned time: each bucket's operating factory-minutes inside the factories' shifts.
# ``%(factory)s`` / ``%(lo)s`` / ``%(hi)s`` list the scheduled intervals of every factory
# with lines (from the calendar, services/core/calendar.py); a minute folded before
# park_1m kept its operating factories counts as the roll-up's number.
_OPERATING_SCHEDULED_SQL = """
WITH plan AS (
    SELECT factory_id, range_agg(tstzrange(lo, hi)) AS scheduled
    FROM unnest(%(factory)s::text[], %(lo)s::timestamptz[], %(hi)s::timestamptz[])
        AS p(factory_id, lo, hi)
    GROUP BY factory_id
)
SELECT time_bucket(%(width)s, m.minute, %(origin)s) AS bucket,
       sum(CASE WHEN m.operating_factories IS NULL THEN m.factories_operating
                ELSE (SELECT count(*) FROM unnest(m.operating_factories) AS f(factory_id)
                      JOIN plan USING (factory_id)
                      WHERE m.minute <@ plan.scheduled) END)::bigint AS operating
FROM park_1m m
WHERE m.park_id = %(park)s AND m.minute >= %(start)s AND m.minute < %(end)s
GROUP BY 1
"""

HOUR = timedelta(hours=1)


def _factory_lines(park: ParkInfo) -> dict[str, FactoryLines]:
    """Each factory of the park with lines: how many, their capacity, its calendar."""
    lines: dict[str, list[float]] = {}
    for device in park.devices:
        if device.type_id == LINE_TYPE:
            lines.setdefault(device.factory_id, []).append(device.capacity_units_per_hour or 0.0)
    return {
        factory_id: FactoryLines(
            lines=len(capacities),
            capacity_units_per_hour=sum(capacities),
            calendar=park.calendars.get(factory_id),
        )
        for factory_id, capacities in lines.items()
    }


async def park_history(
    conn: AsyncConnection,
    park: ParkInfo,
    *,
    start: datetime,
    end: datetime,
    bucket: Bucket,
) -> list[BucketSignals]:
    """Return the park's signals per bucket over ``[start, end)`` (whole minutes), oldest first.

    Raises:
        ValueError: ``start`` or ``end`` is not a whole minute, or ``start`` is not before
            ``end``.
    """
    slots = bucket_slots(start, end, bucket)
    params: dict[str, Any] = {
        "width": bucket.width,
        "origin": BUCKET_ORIGIN,
        "park": park.park_id,
        "start": start,
        "end": end,
    }
    sql = _HISTORY_MINUTES_SQL
    if bucket.width >= HOUR:
        # Whole hours [h1, h2); the minutes [start, h1) and [h2, end) around them.
        first_hour = bucket_start(start, Bucket.HOUR)
        h1 = first_hour if first_hour == start else first_hour + HOUR
        h2 = bucket_start(end, Bucket.HOUR)
        if h1 >= h2:  # no whole hour: all minutes
            h1 = h2 = end
        params |= {"h1": h1, "h2": h2}
        sql = _HISTORY_HOURS_SQL
    sums: dict[datetime, MinuteTotals] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.encode(), params)
        for row in await cur.fetchall():
            values: list[Any] = [row[name] for name in _SUM_COLUMNS]
            sums[row["bucket"]] = MinuteTotals(*values)
    registry = registry_counts(park)
    if not park.planned:
        return [bucket_signals(slot, sums.get(slot.ts, MinuteTotals()), registry) for slot in slots]
    factories = _factory_lines(park)
    plans = bucket_plans(slots, factories)
    operating = await _operating_scheduled(conn, params, factories, start=start, end=end)
    return [
        bucket_signals(
            slot,
            replace(
                sums.get(slot.ts, MinuteTotals()), factories_operating=operating.get(slot.ts, 0)
            ),
            registry,
            plan,
        )
        for slot, plan in zip(slots, plans, strict=True)
    ]


async def _operating_scheduled(
    conn: AsyncConnection,
    params: dict[str, Any],
    factories: dict[str, FactoryLines],
    *,
    start: datetime,
    end: datetime,
) -> dict[datetime, int]:
    """Each bucket's operating factory-minutes that fall inside the factory's shifts."""
    ids: list[str] = []
    los: list[datetime] = []
    his: list[datetime] = []
    for factory_id, lines in factories.items():
        for lo, hi in scheduled_intervals(lines.calendar, start, end):
            ids.append(factory_id)
            los.append(lo)
            his.append(hi)
    query = {
        "width": params["width"],
        "origin": params["origin"],
        "park": params["park"],
        "start": start,
        "end": end,
        "factory": ids,
        "lo": los,
        "hi": his,
    }
    async with conn.cursor() as cur:
        await cur.execute(_OPERATING_SCHEDULED_SQL.encode(), query)
        return {bucket: int(count) for bucket, count in await cur.fetchall()}


# Fixed SQL per aggregate over park_metric_1m rows, never built from user text.
_AGG_SQL = {
    Agg.AVG: "sum(mean_sum) / count(*)",
    Agg.MEAN: "sum(sum) / sum(n)",
    Agg.MIN: "min(min)",
    Agg.MAX: "max(max)",
    Agg.SUM: "sum(sum)",
    Agg.COUNT: "sum(n)::double precision",
    Agg.INCREASE: "sum(increase)",
}
# The aggregates a park metric takes.
METRIC_AGGS = tuple(_AGG_SQL)
_STATE_COUNT_SQL = "sum(coalesce((state_counts ->> %(state)s)::bigint, 0))::double precision"

_METRIC_SQL = """
WITH per_bucket AS (
    SELECT time_bucket(%(width)s, minute, %(origin)s) AS bucket, {agg} AS value,
           count(*)::integer AS minutes
    FROM park_metric_1m
    WHERE park_id = %(park)s AND metric = %(metric)s
      AND minute >= %(start)s AND minute < %(end)s
    GROUP BY 1
), grid AS (
    SELECT generate_series(
        time_bucket(%(width)s, %(start)s::timestamptz, %(origin)s),
        %(end)s::timestamptz - interval '1 microsecond',
        %(width)s
    ) AS bucket
)
SELECT grid.bucket, per_bucket.value, coalesce(per_bucket.minutes, 0) AS minutes
FROM grid
LEFT JOIN per_bucket USING (bucket)
ORDER BY grid.bucket
"""


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One bucket of a park metric: null when no device of the park had data in it."""

    ts: datetime
    value: float | None
    minutes: int


@dataclass(frozen=True, slots=True)
class MetricRequest:
    """A park metric per bucket over ``[start, end)`` (whole minutes), and its aggregate.

    ``state``: for a state metric, count the readings in this state.
    """

    park_id: str
    metric: str
    start: datetime
    end: datetime
    bucket: Bucket
    agg: Agg
    state: str | None = None


def _metric_query(ask: MetricRequest) -> tuple[bytes, dict[str, Any]]:
    agg = _STATE_COUNT_SQL if ask.state is not None else _AGG_SQL[ask.agg]
    sql = _METRIC_SQL.format(agg=agg)
    params = {
        "width": ask.bucket.width,
        "origin": BUCKET_ORIGIN,
        "park": ask.park_id,
        "metric": ask.metric,
        "start": ask.start,
        "end": ask.end,
        "state": ask.state,
    }
    return sql.encode(), params


def _metric_point(row: tuple[Any, ...]) -> MetricPoint:
    return MetricPoint(ts=row[0], value=None if row[1] is None else float(row[1]), minutes=row[2])


async def park_metric(conn: AsyncConnection, ask: MetricRequest) -> list[MetricPoint]:
    """Return one point per bucket of the request from ``park_metric_1m``.

    A bucket without data is null, never left out; ``minutes`` says how many of its minutes
    had data.
    """
    sql, params = _metric_query(ask)
    async with conn.cursor() as cur:
        await cur.execute(sql, params)
        return [_metric_point(row) for row in await cur.fetchall()]


async def park_metric_pages(
    conn: AsyncConnection, ask: MetricRequest, *, page_rows: int
) -> AsyncIterator[list[MetricPoint]]:
    """The points of ``park_metric``, ``page_rows`` at a time (a server-side cursor)."""
    sql, params = _metric_query(ask)
    async for page in cursor_pages(conn, "park_metric", sql, params, page_rows):
        yield [_metric_point(row) for row in page]


def history_pages(
    start: datetime, end: datetime, bucket: Bucket, page_buckets: int
) -> list[tuple[datetime, datetime]]:
    """Split ``[start, end)`` at bucket starts into ranges of at most ``page_buckets`` buckets.

    Each bucket lies in one range, clipped as in the whole request, so the pages' histories
    joined are the whole range's history.
    """
    pages: list[tuple[datetime, datetime]] = []
    lo = start
    while lo < end:
        hi = min(bucket_start(lo, bucket) + bucket.width * page_buckets, end)
        pages.append((lo, hi))
        lo = hi
    return pages


async def park_history_pages(
    conn: AsyncConnection,
    park: ParkInfo,
    *,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    page_buckets: int,
) -> AsyncIterator[list[BucketSignals]]:
    """The buckets of ``park_history``, at most ``page_buckets`` per query and page."""
    for lo, hi in history_pages(start, end, bucket, page_buckets):
        yield await park_history(conn, park, start=lo, end=hi, bucket=bucket)
