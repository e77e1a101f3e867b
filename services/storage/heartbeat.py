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
