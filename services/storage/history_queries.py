"""Read queries over the roll-ups: park signal history and park metric aggregates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.core.aggregates import Agg
from services.core.calendar import WorkCalendar, scheduled_intervals
from services.core.history import (
    BUCKET_ORIGIN,
    HOUR,
    Bucket,
    BucketPlan,
    BucketSignals,
    FactoryLines,
    MinuteTotals,
    bucket_plans,
    bucket_signals,
    bucket_slots,
    bucket_start,
    operating_in_shift_minutes,
    registry_counts,
    shift_hours,
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

# Planned time minute by minute: the park minutes in the ranges ``%(mlo)s`` / ``%(mhi)s``
# with the factories that operated in each (core.history.operating_in_shift_minutes keeps
# those inside their shifts).
_OPERATING_MINUTES_SQL = """
SELECT m.minute, m.operating_factories, m.factories_operating
FROM unnest(%(mlo)s::timestamptz[], %(mhi)s::timestamptz[]) AS r(lo, hi)
JOIN park_1m m ON m.park_id = %(park)s AND m.minute >= r.lo AND m.minute < r.hi
"""

# Planned time over whole hours: per bucket, the operating minutes park_1h keeps for each
# factory in the hours wholly inside its calendar's shifts, leaving out the hours in
# ``%(split)s``. ``%(calendar)s`` / ``%(lo)s`` / ``%(hi)s``: each calendar's spans
# of whole hours in shift; ``%(factory)s`` / ``%(follows)s``: the calendar each factory with
# lines follows. Rows with ``unknown`` set name an hour without the breakdown (migration
# 0052), to be read from its minutes.
_OPERATING_HOURS_SQL = """
WITH spans AS (
    SELECT calendar, range_agg(tstzrange(lo, hi)) AS hours
    FROM unnest(%(calendar)s::integer[], %(lo)s::timestamptz[], %(hi)s::timestamptz[])
        AS s(calendar, lo, hi)
    GROUP BY calendar
), follows AS (
    SELECT * FROM unnest(%(factory)s::text[], %(follows)s::integer[]) AS f(factory_id, calendar)
), hours AS MATERIALIZED (
    SELECT hour, factory_operating_minutes AS by_factory
    FROM park_1h
    WHERE park_id = %(park)s AND hour >= %(h1)s AND hour < %(h2)s
      AND hour <> ALL (%(split)s::timestamptz[])
), in_shift AS MATERIALIZED (
    SELECT h.hour, h.by_factory, s.calendar
    FROM hours h
    JOIN spans s ON h.hour <@ s.hours
    WHERE h.by_factory IS NOT NULL
)
SELECT time_bucket(%(width)s, i.hour, %(origin)s) AS bucket,
       coalesce(sum((i.by_factory ->> f.factory_id)::integer), 0)::bigint AS operating,
       NULL::timestamptz AS unknown
FROM in_shift i
JOIN follows f USING (calendar)
GROUP BY 1
UNION ALL
SELECT NULL, NULL, hour FROM hours WHERE by_factory IS NULL
"""


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
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.encode(), params)
        rows = {row["bucket"]: row for row in await cur.fetchall()}
    registry = registry_counts(park)
    plans: list[BucketPlan | None] = [None] * len(slots)
    if park.planned:
        factories = _factory_lines(park)
        plans = list(bucket_plans(slots, factories))
        # Operating factory-minutes count only inside shifts (the other sums stay the roll-up's).
        operating = await _operating_scheduled(
            conn, params, factories, bucket, start=start, end=end
        )
        for ts, row in rows.items():
            row["factories_operating"] = operating.get(ts, 0)
    return [
        bucket_signals(slot, _minute_totals(rows.get(slot.ts)), registry, plan)
        for slot, plan in zip(slots, plans, strict=True)
    ]


def _minute_totals(row: dict[str, Any] | None) -> MinuteTotals:
    """A bucket's sums from its row (none: a bucket without data)."""
    if row is None:
        return MinuteTotals()
    return MinuteTotals(*(row[name] for name in _SUM_COLUMNS))


async def _operating_scheduled(
    conn: AsyncConnection,
    params: dict[str, Any],
    factories: dict[str, FactoryLines],
    bucket: Bucket,
    *,
    start: datetime,
    end: datetime,
) -> dict[datetime, int]:
    """Each bucket's operating factory-minutes that fall inside the factory's shifts.

    Whole hours ``[h1, h2)`` (in ``params`` for buckets of an hour or more) wholly inside or
    outside every shift count from park_1h's minutes per factory; the minutes around them,
    and the hours a shift begins or ends inside, are tested minute by minute.
    """
    # Factories that share a calendar (most follow their park's) are expanded once.
    calendars: dict[WorkCalendar | None, int] = {}
    follows = [calendars.setdefault(lines.calendar, len(calendars)) for lines in factories.values()]
    scheduled = [scheduled_intervals(calendar, start, end) for calendar in calendars]
    totals: dict[datetime, int] = {}
    ranges = [(start, end)]
    if "h1" in params and params["h1"] < params["h2"]:
        h1, h2 = params["h1"], params["h2"]
        shifts = shift_hours(scheduled, h1, h2)
        query = params | _calendar_spans(shifts.full, factories, follows)
        query["split"] = sorted(shifts.split)
        by_minute = set(shifts.split)
        async with conn.cursor() as cur:
            await cur.execute(_OPERATING_HOURS_SQL.encode(), query)
            for at, count, unknown in await cur.fetchall():
                if unknown is not None:
                    by_minute.add(unknown)
                else:
                    totals[at] = int(count)
        ranges = _merged([(start, h1), *((h, h + HOUR) for h in sorted(by_minute)), (h2, end)])
    if not ranges:
        return totals
    query = {
        "park": params["park"],
        "mlo": [lo for lo, _ in ranges],
        "mhi": [hi for _, hi in ranges],
    }
    async with conn.cursor() as cur:
        await cur.execute(_OPERATING_MINUTES_SQL.encode(), query)
        minutes = await cur.fetchall()
    by_factory = dict(zip(factories, follows, strict=True))
    for at, count in operating_in_shift_minutes(minutes, scheduled, by_factory, bucket).items():
        totals[at] = totals.get(at, 0) + count
    return totals


def _calendar_spans(
    per_calendar: Sequence[Sequence[tuple[datetime, datetime]]],
    factories: dict[str, FactoryLines],
    follows: list[int],
) -> dict[str, list[Any]]:
    """The parameters naming each calendar's spans and the calendar each factory follows."""
    spans = [(i, lo, hi) for i, found in enumerate(per_calendar) for lo, hi in found]
    return {
        "calendar": [i for i, _, _ in spans],
        "lo": [lo for _, lo, _ in spans],
        "hi": [hi for _, _, hi in spans],
        "factory": list(factories),
        "follows": follows,
    }


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The non-empty ``ranges`` (in order), adjacent ones joined."""
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in ranges:
        if lo >= hi:
            continue
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


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
