"""Ingest workers' heartbeats, so any API process can report the pipeline's health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

_UPSERT = """
INSERT INTO ingest_workers AS w
    (client_id, pid, started_at, heartbeat_at, registry_version, degraded, buffered)
VALUES (%s, %s, %s, now(), %s, %s, %s)
ON CONFLICT (client_id) DO UPDATE
SET pid = excluded.pid, started_at = excluded.started_at, heartbeat_at = now(),
    registry_version = excluded.registry_version, degraded = excluded.degraded,
    buffered = excluded.buffered
"""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One worker's report."""

    client_id: str
    pid: int
    started_at: datetime
    registry_version: int
    degraded: bool
    buffered: int


async def beat(conn: psycopg.AsyncConnection, heartbeat: Heartbeat) -> None:
    """Record a heartbeat (the connection is in autocommit mode)."""
    await conn.execute(
        _UPSERT,
        (
            heartbeat.client_id,
            heartbeat.pid,
            heartbeat.started_at,
            heartbeat.registry_version,
            heartbeat.degraded,
            heartbeat.buffered,
        ),
    )


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """One worker as the readiness check sees it."""

    client_id: str
    degraded: bool
    stale: bool


async def worker_health(conn: psycopg.AsyncConnection, stale_after_s: float) -> list[WorkerHealth]:
    """Return the workers that reported in the last day, stale when silent ``stale_after_s``."""
    cur = await conn.execute(
        "SELECT client_id, degraded,"
        " extract(epoch FROM now() - heartbeat_at) > %s AS stale"
        " FROM ingest_workers WHERE heartbeat_at > now() - interval '1 day'"
        " ORDER BY client_id",
        (stale_after_s,),
    )
    return [WorkerHealth(c, bool(d), bool(s)) for c, d, s in await cur.fetchall()]
