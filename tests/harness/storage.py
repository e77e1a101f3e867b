"""Storage harness: a small fleet, readings as ingest hands them over, the writer and the fold.

Used by the storage, API, maintenance and deploy tests to store data the production way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from schemas.fleet import parse_fleet
from services.core.batching import Batch
from services.core.readings import Reading, StatusUpdate
from services.storage.fleet_store import load_fleet
from services.storage.rollups import FoldResult, fold
from services.storage.writer import BatchWriter, WriteResult

DAY = datetime(2026, 11, 26, tzinfo=UTC)

FLEET = """
parks:
  - id: p1
    city: Hebi
    factories:
      - id: f1
        devices:
          - {id: m1, type: power_meter}
          - {id: l1, type: production_line, capacity_units_per_hour: 1200}
          - {id: e1, type: env_sensor, thresholds: {temp_c: {min: 5, max: 35}}}
          - {id: x1, type: machine}
      - id: f2
        devices:
          - {id: l2, type: production_line, capacity_units_per_hour: 600}
          - {id: m2, type: power_meter}
  - id: p2
    city: Hebi
    factories:
      - id: g1
        devices:
          - {id: l3, type: production_line, capacity_units_per_hour: 100}
          - {id: m3, type: power_meter}
"""


def t(hour: int, minute: int, second: float = 0) -> datetime:
    """An instant on the test day."""
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def reading(device: str, metric: str, ts: datetime, value: float | str) -> Reading:
    """A reading as ingest hands it to the writer."""
    if isinstance(value, str):
        return Reading(device, metric, ts, None, value, ts)
    return Reading(device, metric, ts, float(value), None, ts)


def status(device: str, ts: datetime, online: bool) -> StatusUpdate:
    """A status message as ingest hands it to the writer."""
    return StatusUpdate(device, online, ts, ts)


def fold_now(conninfo: str) -> FoldResult:
    """Fold every committed dirty key, as the maintenance process does each second."""

    async def run() -> FoldResult:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            return await fold(conn)

    return asyncio.run(run())


def write(
    conninfo: str, readings: Iterable[Reading], statuses: Sequence[StatusUpdate] = ()
) -> WriteResult:
    """Write one batch with the production writer, then fold it into the roll-ups."""

    async def run() -> WriteResult:
        writer = BatchWriter(conninfo)
        await writer.connect()
        try:
            return await writer.write(Batch(readings=list(readings), statuses=list(statuses)))
        finally:
            await writer.close()

    result = asyncio.run(run())
    fold_now(conninfo)
    return result


def write_batches(
    conninfo: str,
    batches: Iterable[Iterable[Reading]],
    *,
    fold_every: int = 1,
    fold_at_end: bool = True,
    folds: list[FoldResult] | None = None,
) -> list[WriteResult]:
    """Write several batches over one connection, as an ingest worker does.

    The maintenance fold runs after every ``fold_every`` batches and (``fold_at_end``) once
    at the end, so roll-ups see batches folded one at a time and several together; each
    fold's result is appended to ``folds`` when given.
    """
    done = [] if folds is None else folds

    async def run() -> list[WriteResult]:
        writer = BatchWriter(conninfo)
        await writer.connect()
        results = []
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                for i, b in enumerate(batches, start=1):
                    results.append(await writer.write(Batch(readings=list(b))))
                    if i % fold_every == 0:
                        done.append(await fold(conn))
                if fold_at_end:
                    done.append(await fold(conn))
            return results
        finally:
            await writer.close()

    return asyncio.run(run())


def load(conninfo: str, fleet_yaml: str = FLEET) -> None:
    """Load a fleet into the registry."""
    load_fleet(conninfo, parse_fleet(fleet_yaml))


def rows(conninfo: str, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run a query and return dict rows."""
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query.encode(), params)
        return cur.fetchall()


# The primary key of each hypertable kept in device order (services/storage/chunk_order.py).
CHUNK_KEYS = {
    "readings": "device_id, metric, ts",
    "readings_1m": "device_id, metric, minute",
    "readings_15m": "device_id, metric, quarter",
}


def chunks(conninfo: str, table: str) -> list[str]:
    """The chunks of a hypertable as ``schema.name``, oldest first."""
    return [
        f"{r['chunk_schema']}.{r['chunk_name']}"
        for r in rows(
            conninfo,
            "SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks"
            " WHERE hypertable_name = %s ORDER BY range_start",
            (table,),
        )
    ]


def physical_keys(conninfo: str, chunk: str, table: str) -> list[tuple[Any, ...]]:
    """A chunk's primary keys in the order its heap holds them."""
    schema, name = chunk.split(".")
    query = sql.SQL("SELECT {} FROM {} ORDER BY ctid").format(
        sql.SQL(CHUNK_KEYS[table]), sql.Identifier(schema, name)
    )
    with psycopg.connect(conninfo) as conn:
        return [tuple(r) for r in conn.execute(query)]


# Each quarter hour's sums over its minutes in readings_1m, as readings_15m holds them.
QUARTERS_OF_MINUTES = """
SELECT device_id, metric, time_bucket(interval '15 minutes', minute) AS quarter,
       sum(n)::integer AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
       min(first_ts) AS first_ts, max(last_ts) AS last_ts,
       (array_agg(first_value ORDER BY first_ts))[1] AS first_value,
       (array_agg(last_value ORDER BY last_ts DESC))[1] AS last_value,
       (array_agg(first_text ORDER BY first_ts))[1] AS first_text,
       (array_agg(last_text ORDER BY last_ts DESC))[1] AS last_text
FROM readings_1m
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""
