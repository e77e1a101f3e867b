"""Leader election on a PostgreSQL session advisory lock: one holder among many processes.

The leader holds the lock on a connection of its own and does its work through that same
connection, so the work stops the moment the session that holds the lock is gone: if the
leader dies, PostgreSQL ends its session and frees the lock for a standby; if the
connection breaks, the leader's next query fails and it steps down.
"""

from __future__ import annotations

import psycopg

# Lock keys of the project's elected jobs (arbitrary constants, one per job).
SIGNALS_PUBLISHER_LOCK = 0x70_61_72_6B_73_69_67  # "parksig"


async def try_lead(conn: psycopg.AsyncConnection, key: int) -> bool:
    """Take the session lock ``key`` on ``conn`` if it is free; return whether ``conn`` holds it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    return bool(row and row[0])
