"""Retention: raw readings dropped by whole chunks, roll-ups and availability by time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention run removed."""

    raw_cutoff: datetime
    rollup_cutoff: datetime
    raw_chunks_dropped: int
    rollup_chunks_dropped: int
    rollup_rows_deleted: int
    availability_rows_deleted: int


async def _drop_chunks(conn: AsyncConnection, table: str, older_than: datetime) -> int:
    # drop_chunks removes only chunks whose whole time range is before older_than.
    cur = await conn.execute(
        "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)",
        (table, older_than),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def apply_retention(
    conn: AsyncConnection, *, now: datetime, raw_keep: timedelta, rollup_keep: timedelta
) -> RetentionResult:
    """Drop raw readings older than ``raw_keep`` and roll-ups older than ``rollup_keep``.

    Raw readings go by whole chunks only (``drop_chunks``), so up to one chunk interval
    (a day) more than ``raw_keep`` stays. Roll-ups go by whole chunks and then row by row,
    so nothing older than ``rollup_keep`` stays. Status events older than the roll-ups go
    too, except each device's newest, which still decides its state.
    """
    raw_cutoff = now - raw_keep
    rollup_cutoff = now - rollup_keep
    async with conn.transaction():
        raw_chunks = await _drop_chunks(conn, "readings", raw_cutoff)
        rollup_chunks = await _drop_chunks(conn, "readings_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_metric_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_1h", rollup_cutoff)
        deleted = 0
        for table, column in (
            ("readings_1m", "minute"),
            ("park_1m", "minute"),
            ("park_metric_1m", "minute"),
            ("park_1h", "hour"),
        ):
            cur = await conn.execute(
                f"DELETE FROM {table} WHERE {column} < %s",  # fixed identifiers
                (rollup_cutoff,),
            )
            deleted += max(cur.rowcount, 0)
        cur = await conn.execute("DELETE FROM device_availability WHERE ts < %s", (rollup_cutoff,))
        availability_deleted = max(cur.rowcount, 0)
        await conn.execute(
            "DELETE FROM device_status_events e WHERE e.ts < %s AND e.ts < ("
            " SELECT max(n.ts) FROM device_status_events n WHERE n.device_id = e.device_id)",
            (rollup_cutoff,),
        )
    result = RetentionResult(
        raw_cutoff=raw_cutoff,
        rollup_cutoff=rollup_cutoff,
        raw_chunks_dropped=raw_chunks,
        rollup_chunks_dropped=rollup_chunks,
        rollup_rows_deleted=deleted,
        availability_rows_deleted=availability_deleted,
    )
    if raw_chunks or rollup_chunks or deleted:
        logger.info(
            "Retention dropped %d raw chunks before %s, %d roll-up chunks and %d roll-up rows"
            " before %s",
            raw_chunks,
            raw_cutoff.isoformat(),
            rollup_chunks,
            deleted,
            rollup_cutoff.isoformat(),
        )
    return result
