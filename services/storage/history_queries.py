"""Read queries over the roll-ups: park signal history and park metric aggregates."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from services.core.history import (
    BUCKET_ORIGIN,
    Bucket,
    BucketSignals,
    MinuteTotals,
    bucket_signals,
    bucket_slots,
)
from services.storage.signal_queries import ParkInfo

_SUM_COLUMNS = [f.name for f in fields(MinuteTotals)]

_HISTORY_SQL = """
SELECT time_bucket(%(width)s, minute, %(origin)s) AS bucket, {sums}
FROM park_1m
WHERE park_id = %(park)s AND minute >= %(start)s AND minute < %(end)s
GROUP BY 1
ORDER BY 1
""".format(sums=", ".join(f"sum({c}) AS {c}" for c in _SUM_COLUMNS))


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
    params = {
        "width": bucket.width,
        "origin": BUCKET_ORIGIN,
        "park": park.park_id,
        "start": start,
        "end": end,
    }
    sums: dict[datetime, MinuteTotals] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_HISTORY_SQL.encode(), params)
        for row in await cur.fetchall():
            sums[row["bucket"]] = MinuteTotals(
                **{
                    name: (float(row[name]) if isinstance(row[name], float) else int(row[name]))
                    for name in _SUM_COLUMNS
                }
            )
    registry = park.registry_counts()
    return [bucket_signals(slot, sums.get(slot.ts, MinuteTotals()), registry) for slot in slots]


class Agg(StrEnum):
    """How one device's minutes make one bucket value."""

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"
    INCREASE = "increase"


class Combine(StrEnum):
    """How the park's devices' bucket values make the park's."""

    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"


# Fixed SQL per aggregate, never built from user text. A device's value in a bucket from
# its readings_1m rows there.
_DEVICE_AGG_SQL = {
    Agg.AVG: "sum(r.sum) / sum(r.n)",
    Agg.MIN: "min(r.min)",
    Agg.MAX: "max(r.max)",
    Agg.SUM: "sum(r.sum)",
    Agg.COUNT: "sum(r.n)::double precision",
    Agg.FIRST: "first(r.first_value, r.first_ts)",
    Agg.LAST: "last(r.last_value, r.last_ts)",
    Agg.INCREASE: "sum(coalesce(r.inc_within, 0) + coalesce(r.inc_from_prev, 0))",
}
_STATE_COUNT_SQL = "sum(coalesce((r.state_counts ->> %(state)s)::bigint, 0))::double precision"
_COMBINE_SQL = {
    Combine.SUM: "sum(v)",
    Combine.AVG: "avg(v)",
    Combine.MIN: "min(v)",
    Combine.MAX: "max(v)",
}

_METRIC_SQL = """
WITH per_device AS (
    SELECT time_bucket(%(width)s, r.minute, %(origin)s) AS bucket, r.device_id, {device} AS v
    FROM devices d
    JOIN readings_1m r ON r.device_id = d.device_id
    WHERE d.park_id = %(park)s AND r.metric = %(metric)s
      AND r.minute >= %(start)s AND r.minute < %(end)s
    GROUP BY 1, 2
), per_bucket AS (
    SELECT bucket, {combine} AS value, count(v)::integer AS devices
    FROM per_device
    GROUP BY bucket
), grid AS (
    SELECT generate_series(
        time_bucket(%(width)s, %(start)s::timestamptz, %(origin)s),
        %(end)s::timestamptz - interval '1 microsecond',
        %(width)s
    ) AS bucket
)
SELECT grid.bucket, per_bucket.value, coalesce(per_bucket.devices, 0) AS devices
FROM grid
LEFT JOIN per_bucket USING (bucket)
ORDER BY grid.bucket
"""


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One bucket of a park metric: null when no device of the park had data in it."""

    ts: datetime
    value: float | None
    devices: int


async def park_metric(
    conn: AsyncConnection,
    park_id: str,
    *,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    agg: Agg,
    combine: Combine,
    state: str | None = None,
) -> list[MetricPoint]:
    """Return one point per bucket of ``[start, end)`` (whole minutes) from ``readings_1m``.

    Each device's minutes in a bucket give its value by ``agg`` (with ``state``, ``count``
    counts only the samples in that state); the devices' values give the park's by
    ``combine``. A bucket without data is null, never left out.
    """
    device_sql = _STATE_COUNT_SQL if state is not None else _DEVICE_AGG_SQL[agg]
    sql = _METRIC_SQL.format(device=device_sql, combine=_COMBINE_SQL[combine])
    params = {
        "width": bucket.width,
        "origin": BUCKET_ORIGIN,
        "park": park_id,
        "metric": metric,
        "start": start,
        "end": end,
        "state": state,
    }
    async with conn.cursor() as cur:
        await cur.execute(sql.encode(), params)
        return [
            MetricPoint(ts=row[0], value=None if row[1] is None else float(row[1]), devices=row[2])
            for row in await cur.fetchall()
        ]
