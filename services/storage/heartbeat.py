"""Ingest workers' heartbeats, so any API process can report the pipeline's health."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

_UPSERT = """
INSERT INTO ingest_workers AS w
    (client_id, pid, started_at, heartbeat_at, registry_version, degraded, buffered,
     subscribed_version, follows_registry)
VALUES (%s, %s, %s, now(), %s, %s, %s, %s, %s)
ON CONFLICT (client_id) DO UPDATE
SET pid = excluded.pid, started_at = excluded.started_at, heartbeat_at = now(),
    registry_version = excluded.registry_version, degraded = excluded.degraded,
    buffered = excluded.buffered, subscribed_version = excluded.subscribed_version,
    follows_registry = excluded.follows_registry
"""
# A worker that has not reported for this long is not waited for by a fleet load (its
# heartbeat comes every 2 s, and at once when its subscriptions move).
LIVE_WITHIN_S = 10.0
# How long a fleet load that adds factories waits for their owners' subscriptions, and how
# often it looks. Past it the load returns anyway, with a warning: the new factories'
# first messages may then find no subscription.
SUBSCRIBE_WAIT_S = 10.0
_SUBSCRIBE_POLL_S = 0.05
_BEHIND = """
SELECT client_id FROM ingest_workers
WHERE follows_registry AND subscribed_version < %s
  AND heartbeat_at > now() - make_interval(secs => %s)
ORDER BY client_id
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
    # The registry version whose filters the broker has acknowledged, and whether this
    # worker's filters follow the registry (services/core/assignment.follows_registry).
    subscribed_version: int = 0
    follows_registry: bool = False


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
            heartbeat.subscribed_version,
            heartbeat.follows_registry,
        ),
    )


def wait_for_subscriptions(conn: psycopg.Connection, version: int) -> list[str]:
    """Wait until every live worker whose filters follow the registry has ``version``'s.

    Returns:
        The workers still behind when ``SUBSCRIBE_WAIT_S`` passed (empty: all caught up).
    """
    deadline = time.monotonic() + SUBSCRIBE_WAIT_S
    while True:
        behind = [row[0] for row in conn.execute(_BEHIND, (version, LIVE_WITHIN_S)).fetchall()]
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(_SUBSCRIBE_POLL_S)


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
