"""Closed chunks rewritten in device order, so one device's rows share pages.

Ingest writes rows in time order, so in a chunk each device's rows of a minute sit beside
every other device's: reading one device over a month touches one page per row (about
43,000 pages for 30 days at one row a minute). ``CLUSTER`` on the primary key
``(device_id, metric, ts|minute)`` rewrites a chunk so that a device's rows are contiguous
and the same read touches a few hundred. The Apache edition of TimescaleDB has no
``reorder_chunk`` policy; the full edition's compression (``segmentby device_id, metric``)
does the same and more (see docs/deploy.md).

Maintenance calls ``reorder_closed_chunks`` every ``PARKSENSE_MAINTENANCE_REORDER_INTERVAL_S``
(``services/maintenance/jobs.py``, ``reorder_once``) with a ``closed_before`` a margin in the
past (``..._REORDER_MARGIN_S``: late data still lands in a closed chunk, appended unordered,
and is not worth a second rewrite). ``CLUSTER`` holds an ACCESS EXCLUSIVE lock on the one chunk it
rewrites: reads and late writes of that chunk wait for it, so each call rewrites at most
``max_chunks``, one transaction each, and gives up on a chunk it cannot lock in
``lock_timeout_s``.
"""

from __future__ import annotations

import logging
from datetime import datetime

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

# Hypertables whose chunks are worth keeping in device order: the roll-ups the device
# readings read, and the raw rows behind partial minutes and raw points.
REORDERED_TABLES = ("readings_15m", "readings_1m", "readings")

# Chunks of ``table`` that end at or before ``closed_before`` and whose primary key was
# never clustered (CLUSTER marks the index it used: pg_index.indisclustered).
_CANDIDATES_SQL = """
SELECT c.chunk_schema, c.chunk_name, ix.relname
FROM timescaledb_information.chunks c
JOIN pg_class t ON t.relname = c.chunk_name
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = c.chunk_schema
JOIN pg_index i ON i.indrelid = t.oid AND i.indisprimary
JOIN pg_class ix ON ix.oid = i.indexrelid
WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = %(table)s
  AND c.range_end <= %(closed_before)s AND NOT i.indisclustered
ORDER BY c.range_start
LIMIT %(limit)s
"""


async def reorder_closed_chunks(
    conn: psycopg.AsyncConnection,
    *,
    closed_before: datetime,
    table: str = "readings_1m",
    max_chunks: int = 1,
    lock_timeout_s: float = 5.0,
) -> list[str]:
    """Rewrite up to ``max_chunks`` closed chunks of ``table`` in primary-key order.

    ``conn`` must be in autocommit mode (each chunk is its own transaction).

    Returns:
        The chunks rewritten, oldest first; one that could not be locked in time is left
        for the next call.

    Raises:
        ValueError: ``table`` is not one of ``REORDERED_TABLES``, or ``conn`` is not in
            autocommit mode.
    """
    if table not in REORDERED_TABLES:
        raise ValueError(f"{table} is not reordered; choose one of {REORDERED_TABLES}")
    if not conn.autocommit:
        raise ValueError("reorder_closed_chunks needs an autocommit connection")
    async with conn.cursor() as cur:
        await cur.execute(
            _CANDIDATES_SQL, {"table": table, "closed_before": closed_before, "limit": max_chunks}
        )
        candidates = await cur.fetchall()
    done: list[str] = []
    for schema, chunk, index in candidates:
        name = f"{schema}.{chunk}"
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    (f"{int(lock_timeout_s * 1000)}",),
                )
                await cur.execute(
                    sql.SQL("CLUSTER {} USING {}").format(
                        sql.Identifier(schema, chunk), sql.Identifier(index)
                    )
                )
        except psycopg.errors.LockNotAvailable:  # SQLSTATE 55P03: busy, try next time
            logger.info("Chunk %s is busy; reordering it later", name)
            continue
        logger.info("Reordered chunk %s by %s", name, index)
        done.append(name)
    return done
