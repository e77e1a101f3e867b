"""Devices' online state over time: computed from stored events, and materialised by a job.

The events are the readings (as per-minute spans from ``readings_1m``, or raw readings when
the timeout is under a minute) and the status messages (``device_status_events``, recorded
by a trigger on ``device_status``). ``services.core.availability`` turns them into
transitions. ``materialize`` stores those transitions in ``device_availability`` up to a
settled horizon; late readings and status messages mark their device for recomputation.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from services.core.availability import (
    Availability,
    AvailabilityReason,
    ReadingSpan,
    StatusEvent,
    Transition,
    availability,
)

logger = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
# Readings may reach the database this long after they were measured (batching, broker
# queues); the job leaves the most recent minutes unsettled for them.
SETTLE_MARGIN = timedelta(minutes=2)
# How much history one job run settles; a first run over months catches up run by run.
MAX_SPAN_PER_RUN = timedelta(hours=6)

# Per-minute spans: with a timeout of at least a minute, readings inside one minute are
# never more than the timeout apart, so the first and last reading of each minute say
# everything the online rule needs. Minutes whose readings are at most the timeout apart
# are merged here into runs, so a year of minutes comes back as a few rows.
_MINUTE_SPANS_SQL = """
SELECT device_id, min(first_ts), max(last_ts)
FROM (
    SELECT device_id, first_ts, last_ts,
           sum(starts) OVER (PARTITION BY device_id ORDER BY first_ts) AS island
    FROM (
        SELECT device_id, first_ts, last_ts,
               CASE WHEN first_ts - lag(last_ts) OVER (PARTITION BY device_id ORDER BY first_ts)
                         <= %(timeout)s
                    THEN 0 ELSE 1 END AS starts
        FROM (
            SELECT device_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts
            FROM readings_1m
            WHERE device_id = ANY(%(devices)s) AND minute >= %(lo)s AND minute < %(hi)s
            GROUP BY device_id, minute
        ) per_minute
    ) marked
) islands
GROUP BY device_id, island
"""

_RAW_SPANS_SQL = """
SELECT DISTINCT device_id, ts, ts
FROM readings
WHERE device_id = ANY(%(devices)s) AND ts >= %(lo)s AND ts < %(hi)s
"""

# Status messages from the newest one at or before start, each offline one with the first
# reading after it (from raw readings, per metric of the device's type; when those are
# past retention, the first per-minute roll-up that starts after it).
_STATUS_SQL = """
WITH events AS (
    SELECT e.device_id, e.ts, e.online
    FROM device_status_events e
    WHERE e.device_id = ANY(%(devices)s) AND e.ts < %(hi)s
      AND e.ts >= coalesce((
          SELECT max(p.ts) FROM device_status_events p
          WHERE p.device_id = e.device_id AND p.ts <= %(start)s
      ), '-infinity')
)
SELECT e.device_id, e.ts, e.online,
       CASE WHEN NOT e.online THEN coalesce(
           (SELECT min(nxt.ts) FROM devices d
            JOIN device_type_metrics m ON m.type_id = d.type_id
            CROSS JOIN LATERAL (
                SELECT r.ts FROM readings r
                WHERE r.device_id = d.device_id AND r.metric = m.metric AND r.ts > e.ts
                ORDER BY r.ts LIMIT 1
            ) nxt
            WHERE d.device_id = e.device_id),
           (SELECT min(r.first_ts) FROM readings_1m r
            WHERE r.device_id = e.device_id AND r.minute > e.ts AND r.first_ts > e.ts)
       ) END AS resumed_at
FROM events e
"""


@dataclass(frozen=True, slots=True)
class DeviceEvents:
    """What the online rule of one device needs over an interval."""

    spans: list[ReadingSpan]
    statuses: list[StatusEvent]


async def device_events(
    conn: AsyncConnection,
    device_ids: Sequence[str],
    *,
    start: datetime,
    end: datetime,
    online_timeout: timedelta,
) -> dict[str, DeviceEvents]:
    """Gather, per device, the reading spans and status messages that decide ``[start, end)``."""
    lo = start - online_timeout
    params = {
        "devices": list(device_ids),
        "lo": lo.replace(second=0, microsecond=0) if online_timeout >= MINUTE else lo,
        "hi": end,
        "start": start,
        "timeout": online_timeout,
    }
    events: dict[str, DeviceEvents] = defaultdict(lambda: DeviceEvents([], []))
    async with conn.cursor() as cur:
        await cur.execute(_MINUTE_SPANS_SQL if online_timeout >= MINUTE else _RAW_SPANS_SQL, params)
        for device_id, first_ts, last_ts in await cur.fetchall():
            events[device_id].spans.append(ReadingSpan(first_ts, last_ts))
        await cur.execute(_STATUS_SQL, params)
        for device_id, ts, online, resumed_at in await cur.fetchall():
            events[device_id].statuses.append(StatusEvent(ts, online, resumed_at))
    return events


async def device_availability(
    conn: AsyncConnection,
    device_id: str,
    *,
    start: datetime,
    end: datetime,
    online_timeout: timedelta,
) -> Availability:
    """Return a device's online state over ``[start, end)``, straight from the stored events."""
    events = (
        await device_events(conn, [device_id], start=start, end=end, online_timeout=online_timeout)
    ).get(device_id, DeviceEvents([], []))
    return availability(events.spans, events.statuses, start=start, end=end, timeout=online_timeout)


@dataclass(frozen=True, slots=True)
class MaterializeResult:
    """What one run of the availability job did."""

    settled_from: datetime | None
    settled_to: datetime | None
    devices: int
    transitions: int
    recomputed_devices: int


async def _transitions(
    conn: AsyncConnection,
    device_ids: Sequence[str],
    *,
    start: datetime,
    end: datetime,
    online_timeout: timedelta,
) -> dict[str, list[Transition]]:
    """Transitions of each device in ``[start, end)`` (the state before start is known)."""
    before = start - MINUTE
    events = await device_events(
        conn, device_ids, start=before, end=end, online_timeout=online_timeout
    )
    result = {}
    for device_id in device_ids:
        found = events.get(device_id, DeviceEvents([], []))
        timeline = availability(
            found.spans, found.statuses, start=before, end=end, timeout=online_timeout
        )
        result[device_id] = [t for t in timeline.transitions if t.ts >= start]
    return result


async def _store(
    conn: AsyncConnection, transitions: dict[str, list[Transition]], start: dict[str, datetime]
) -> int:
    rows = [
        (device_id, t.ts, t.online, t.reason.value)
        for device_id, found in transitions.items()
        for t in found
    ]
    async with conn.cursor() as cur:
        for device_id, since in start.items():
            await cur.execute(
                "DELETE FROM device_availability WHERE device_id = %s AND ts >= %s",
                (device_id, since),
            )
        await cur.executemany(
            "INSERT INTO device_availability (device_id, ts, online, reason)"
            " VALUES (%s, %s, %s, %s)",
            rows,
        )
    return len(rows)


async def _first_roll_up_minute(conn: AsyncConnection) -> datetime | None:
    """The oldest minute in readings_1m, scanning only its first chunk."""
    cur = await conn.execute(
        "SELECT min(range_end) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'readings_1m'"
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    cur = await conn.execute("SELECT min(minute) FROM readings_1m WHERE minute < %s", (row[0],))
    found = await cur.fetchone()
    return found[0] if found else None


async def materialize(
    conn: AsyncConnection,
    *,
    now: datetime,
    online_timeout: timedelta,
    max_span: timedelta = MAX_SPAN_PER_RUN,
) -> MaterializeResult:
    """Store the registered devices' transitions up to ``now - timeout - SETTLE_MARGIN``.

    One transaction; concurrent runs queue on the progress row. Devices with late readings
    or status messages (``availability_dirty``) are recomputed from the earliest of them.
    A changed timeout starts the table over.
    """
    settle_to = (now - online_timeout - SETTLE_MARGIN).replace(second=0, microsecond=0)
    async with conn.transaction(), conn.cursor() as cur:
        # The row exists from the migration on, unless someone emptied the table.
        await cur.execute(
            "INSERT INTO availability_progress (id) VALUES (true) ON CONFLICT DO NOTHING"
        )
        await cur.execute(
            "SELECT settled_to, timeout_s FROM availability_progress WHERE id FOR UPDATE"
        )
        progress = await cur.fetchone()
        settled_to, timeout_s = progress or (None, None)
        if timeout_s is not None and timeout_s != online_timeout.total_seconds():
            logger.info(
                "Online timeout changed to %s: recomputing all availability", online_timeout
            )
            await cur.execute("DELETE FROM device_availability")
            await cur.execute("DELETE FROM availability_dirty")
            settled_to = None
        base = settled_to or await _first_roll_up_minute(conn)
        await cur.execute("SELECT device_id FROM devices ORDER BY device_id")
        devices = [row[0] for row in await cur.fetchall()]
        if base is None or base >= settle_to or not devices:
            return MaterializeResult(settled_to, settled_to, len(devices), 0, 0)
        upto = min(settle_to, base + max_span)
        await cur.execute(
            "DELETE FROM availability_dirty WHERE from_ts < %s RETURNING device_id, from_ts",
            (upto,),
        )
        dirty = {
            device_id: min(from_ts.replace(second=0, microsecond=0), base)
            for device_id, from_ts in await cur.fetchall()
        }
        clean = [d for d in devices if d not in dirty]
        transitions = await _transitions(
            conn, clean, start=base, end=upto, online_timeout=online_timeout
        )
        starts = dict.fromkeys(clean, base)
        for device_id, since in dirty.items():
            found = await _transitions(
                conn, [device_id], start=since, end=upto, online_timeout=online_timeout
            )
            transitions.update(found)
            starts[device_id] = since
        written = await _store(conn, transitions, starts)
        await cur.execute(
            "UPDATE availability_progress SET settled_to = %s, timeout_s = %s WHERE id",
            (upto, online_timeout.total_seconds()),
        )
    logger.debug("Availability settled to %s: %d transitions", upto, written)
    return MaterializeResult(base, upto, len(devices), written, len(dirty))


async def stored_transitions(
    conn: AsyncConnection, device_id: str, start: datetime, end: datetime
) -> list[Transition]:
    """The materialised transitions of a device in ``[start, end)``."""
    cur = await conn.execute(
        "SELECT ts, online, reason FROM device_availability"
        " WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts",
        (device_id, start, end),
    )
    return [
        Transition(ts, online, AvailabilityReason(reason))
        for ts, online, reason in await cur.fetchall()
    ]
