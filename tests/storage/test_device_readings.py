"""A device's bucketed readings from roll-ups and raw rows equal the aggregate over raw rows."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.core.aggregates import Agg
from services.core.read_plan import MINUTE
from services.storage import device_readings
from tests.harness.storage import load, reading, t, write_batches

# The definition: each aggregate over the raw readings of a bucket (the endpoint's query
# before it read roll-ups), kept here as the oracle.
_RAW_NUMERIC = {
    "avg": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "sum": "sum(value)",
    "count": "count(*)::double precision",
    "first": "first(value, ts)",
    "last": "last(value, ts)",
}
_RAW_STATE = {
    "count": "count(*)::text",
    "first": "first(value_text, ts)",
    "last": "last(value_text, ts)",
}
_ORACLE_SQL = """
WITH buckets AS (
    SELECT time_bucket(%(bucket)s, ts, %(origin)s) AS bucket, {expr} AS value
    FROM readings
    WHERE device_id = %(device)s AND metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s
    GROUP BY 1
), grid AS (
    SELECT generate_series(
        time_bucket(%(bucket)s, %(start)s::timestamptz, %(origin)s),
        %(end)s::timestamptz - interval '1 microsecond', %(bucket)s) AS bucket
)
SELECT grid.bucket AS ts, buckets.value FROM grid LEFT JOIN buckets USING (bucket)
ORDER BY grid.bucket
"""

BUCKETS = [
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=7),  # not a divisor of an hour
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(seconds=90),  # not whole minutes: raw rows only
    timedelta(seconds=20),
]
RANGES = [
    (t(9, 0), t(12, 0)),  # whole minutes and buckets
    (t(9, 3, 17.25), t(11, 58, 41.5)),  # partial edge minutes and buckets
    (t(10, 5, 10), t(10, 5, 50)),  # inside one minute
    (t(10, 5, 30), t(10, 6, 30)),  # two partial minutes, no whole one
    (t(8, 0), t(10, 30, 0.001)),  # starts before the data
]


def gauge_value(minute: int, second: int) -> float:
    """Quarter steps, so that sums are exact in any order and avg has one right answer."""
    return ((minute * 13 + second * 7) % 97) * 0.25 - 8


def write_data(db: str) -> None:
    """Gauge, counter and state readings over three hours, late and redelivered in part."""
    seconds = (0, 1, 17, 29.5, 44, 59.999)
    first = [
        reading("m1", "power_kw", t(9, 0) + timedelta(minutes=m, seconds=s), gauge_value(m, i))
        for m in range(180)
        if m % 11 != 3  # some minutes hold nothing
        for i, s in enumerate(seconds[: 1 + m % len(seconds)])
    ]
    counter = [
        reading("m1", "energy_kwh", t(9, 0) + timedelta(minutes=m, seconds=s), (m * 3 + s) % 50)
        for m in range(180)
        for s in (5, 35)
    ]
    states = [
        reading(
            "l1", "state", t(9, 0) + timedelta(minutes=m, seconds=s), ("running", "idle")[m % 2]
        )
        for m in range(180)
        for s in (10, 40)
        if (m + s) % 7
    ]
    # Late readings between stored ones of the same minute, and a redelivered batch.
    late = [
        reading("m1", "power_kw", t(10, 5, 30.5), 99.75),
        reading("m1", "power_kw", t(11, 0, 0.5), -3.5),
        reading("l1", "state", t(10, 5, 20), "fault"),
    ]
    write_batches(db, [first[::2], counter, states, first[1::2], late, first[:40]])


async def oracle(
    conn: psycopg.AsyncConnection[Any],
    device: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    agg: str,
) -> list[tuple[datetime, Any]]:
    """The aggregate per bucket over raw readings."""
    table = _RAW_STATE if metric == "state" else _RAW_NUMERIC
    params = {
        "bucket": bucket,
        "origin": datetime(2000, 1, 3, tzinfo=start.tzinfo),
        "device": device,
        "metric": metric,
        "start": start,
        "end": end,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ORACLE_SQL.format(expr=table[agg]).encode(), params)
        return [(row["ts"], row["value"]) for row in await cur.fetchall()]


async def served(
    conn: psycopg.AsyncConnection[Any],
    device: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    agg: str,
) -> list[tuple[datetime, Any]]:
    """The answer of the endpoint's storage function."""
    ask = device_readings.BucketRequest(
        device, metric, start, end, bucket, Agg(agg), state_metric=metric == "state"
    )
    return await device_readings.bucketed_readings(conn, ask)


@pytest.fixture
def data(clean_db: str) -> str:
    """The test fleet and its readings, written by the production writer."""
    load(clean_db)
    write_data(clean_db)
    return clean_db


@pytest.mark.parametrize(
    ("device", "metric", "agg"),
    [("m1", "power_kw", agg) for agg in _RAW_NUMERIC]
    + [("m1", "energy_kwh", agg) for agg in _RAW_NUMERIC]
    + [("l1", "state", agg) for agg in _RAW_STATE],
)
def test_buckets_equal_the_aggregate_over_raw_readings(
    data: str, device: str, metric: str, agg: str
) -> None:
    """Every aggregate, bucket width and range gives the raw answer, whole minutes or not."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(data) as conn:
            for bucket in BUCKETS:
                for start, end in RANGES:
                    expected = await oracle(conn, device, metric, start, end, bucket, agg)
                    got = await served(conn, device, metric, start, end, bucket, agg)
                    assert got == expected, (bucket, start, end)
                    assert any(v is not None for _, v in expected), (bucket, start, end)

    asyncio.run(run())


def test_whole_minutes_are_read_from_the_rollup(data: str) -> None:
    """With the raw rows of whole minutes gone, only the partial edge minutes change."""
    start, end, bucket = t(9, 3, 17.25), t(11, 58, 41.5), timedelta(minutes=15)

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(data) as conn:
            plan = await device_readings.plan_buckets(
                conn, device_id="m1", metric="power_kw", start=start, end=end, bucket=bucket
            )
            assert (plan.r0, plan.r1, plan.raw_inside) == (t(9, 4), t(11, 58), ())
            before = await served(conn, "m1", "power_kw", start, end, bucket, "sum")
            await conn.execute(
                "DELETE FROM readings WHERE device_id = 'm1' AND metric = 'power_kw'"
                " AND ts >= %s AND ts < %s",
                (plan.r0, plan.r1),
            )
            assert await served(conn, "m1", "power_kw", start, end, bucket, "sum") == before
            await conn.rollback()

    asyncio.run(run())


def test_a_minute_the_fold_has_not_reached_is_read_from_raw_rows(data: str) -> None:
    """Raw rows not in readings_1m count once rollup_unfolded() names their minute."""
    start, end, bucket = t(9, 0), t(12, 0), timedelta(minutes=15)
    unfolded = t(10, 20)

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(data) as conn:
            # Rows committed but not folded: written around the roll-up maintenance.
            await conn.execute(
                "INSERT INTO readings (device_id, metric, ts, value, received_at)"
                " SELECT 'm1', 'power_kw', g, 1000, g FROM generate_series("
                "%s::timestamptz, %s::timestamptz, interval '7 seconds') g"
                " ON CONFLICT DO NOTHING",
                (unfolded, unfolded + MINUTE - timedelta(seconds=1)),
            )
            expected = await oracle(conn, "m1", "power_kw", start, end, bucket, "sum")
            stale = await served(conn, "m1", "power_kw", start, end, bucket, "sum")
            assert stale != expected
            # The seam of migration 0022, as maintenance folding after the commit defines it.
            await conn.execute(
                """
                CREATE OR REPLACE FUNCTION rollup_unfolded(
                    device_id text, metric text, start_ts timestamptz, end_ts timestamptz)
                RETURNS TABLE (lo timestamptz, hi timestamptz) LANGUAGE sql STABLE
                AS $$ SELECT '2026-11-26 10:20:03+00'::timestamptz,
                             '2026-11-26 10:20:04+00'::timestamptz $$
                """
            )
            plan = await device_readings.plan_buckets(
                conn, device_id="m1", metric="power_kw", start=start, end=end, bucket=bucket
            )
            assert [(s.lo, s.hi) for s in plan.raw_inside] == [(unfolded, unfolded + MINUTE)]
            assert await served(conn, "m1", "power_kw", start, end, bucket, "sum") == expected
            for agg in _RAW_NUMERIC:
                assert await served(conn, "m1", "power_kw", start, end, bucket, agg) == (
                    await oracle(conn, "m1", "power_kw", start, end, bucket, agg)
                )
            # A watermark with an open end: every minute from it on is read raw.
            await conn.execute(
                """
                CREATE OR REPLACE FUNCTION rollup_unfolded(
                    device_id text, metric text, start_ts timestamptz, end_ts timestamptz)
                RETURNS TABLE (lo timestamptz, hi timestamptz) LANGUAGE sql STABLE
                AS $$ SELECT '2026-11-26 10:20:30+00'::timestamptz, NULL::timestamptz $$
                """
            )
            plan = await device_readings.plan_buckets(
                conn, device_id="m1", metric="power_kw", start=start, end=end, bucket=bucket
            )
            assert (plan.r0, plan.r1) == (start, unfolded)
            assert await served(conn, "m1", "power_kw", start, end, bucket, "sum") == expected
            await conn.rollback()

    asyncio.run(run())
