"""Retention: raw readings go by whole chunks, everything else row by row by time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from services.storage.rollups import ROLLUP_LOCK_KEY

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
    dead_letters_deleted: int = 0  # refused messages (each with its per-reason rows)
    delivery_rows_deleted: int = 0


async def _drop_chunks(conn: AsyncConnection, table: str, older_than: datetime) -> int:
    # drop_chunks removes only chunks whose whole time range is before older_than.
    cur = await conn.execute(
        "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)",
        (table, older_than),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def apply_retention(
    conn: AsyncConnection,
    *,
    now: datetime,
    raw_keep: timedelta,
    rollup_keep: timedelta,
    dead_letter_keep: timedelta | None = None,
    delivery_keep: timedelta | None = None,
) -> RetentionResult:
    """Drop raw readings older than ``raw_keep`` and roll-ups older than ``rollup_keep``.

    Raw readings go by whole chunks only (``drop_chunks``), so up to one chunk interval
    (a day) more than ``raw_keep`` stays. Roll-ups and the shared park signals per minute
    (``park_signals_1m``) go by whole chunks and then row by row, so nothing older than
    ``rollup_keep`` stays. Status events older than the roll-ups go
    too, except each device's newest, which still decides its state. Dead letters received
    before ``dead_letter_keep`` and delivery minutes before ``delivery_keep`` go row by
    row; None keeps them.
    """
    raw_cutoff = now - raw_keep
    rollup_cutoff = now - rollup_keep
    async with conn.transaction():
        # Never beside a fold: it aggregates raw minutes and writes the roll-ups dropped here.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
        raw_chunks = await _drop_chunks(conn, "readings", raw_cutoff)
        rollup_chunks = await _drop_chunks(conn, "readings_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "readings_15m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_metric_1m", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_1h", rollup_cutoff)
        rollup_chunks += await _drop_chunks(conn, "park_signals_1m", rollup_cutoff)
        deleted = 0
        for table, column in (
            ("readings_1m", "minute"),
            ("readings_15m", "quarter"),
            ("park_1m", "minute"),
            ("park_metric_1m", "minute"),
            ("park_1h", "hour"),
            ("park_signals_1m", "minute"),
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
        dead_letters_deleted = 0
        if dead_letter_keep is not None:
            cutoff = now - dead_letter_keep
            await conn.execute("DELETE FROM dead_letters WHERE received_at < %s", (cutoff,))
            cur = await conn.execute(
                "DELETE FROM dead_letter_messages WHERE received_at < %s", (cutoff,)
            )
            dead_letters_deleted = max(cur.rowcount, 0)
        delivery_deleted = 0
        if delivery_keep is not None:
            cur = await conn.execute(
                "DELETE FROM delivery_1m WHERE minute < %s", (now - delivery_keep,)
            )
            delivery_deleted = max(cur.rowcount, 0)
    result = RetentionResult(
        raw_cutoff=raw_cutoff,
        rollup_cutoff=rollup_cutoff,
        raw_chunks_dropped=raw_chunks,
        rollup_chunks_dropped=rollup_chunks,
        rollup_rows_deleted=deleted,
        availability_rows_deleted=availability_deleted,
        dead_letters_deleted=dead_letters_deleted,
        delivery_rows_deleted=delivery_deleted,
    )
    if dead_letters_deleted or delivery_deleted:
        logger.info(
            "Retention deleted %d dead letters and %d delivery minutes",
            dead_letters_deleted,
            delivery_deleted,
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
