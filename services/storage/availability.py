"""Devices' online state over time: computed from stored events, and materialised by a job.

The events are the readings (as per-minute spans from ``readings_1m``, or raw readings when
the timeout is under a minute) and the status messages (``device_status_events``, recorded
by a trigger on ``device_status``). ``services.core.availability`` turns them into
transitions. ``materialize`` stores those transitions in ``device_availability`` up to a
settled horizon; late readings and status messages mark their device for recomputation.
Every mark (a late reading, a status message, the job's own from its old horizon) is made
by one SQL function, ``mark_availability`` (migration 0050).
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
# Session-level advisory lock of the job ("avjb"), so that runs never overlap.
AVAILABILITY_LOCK_KEY = 0x61766A62

# Reading spans, merged into runs whose readings are at most the timeout apart, so a year of
# minutes comes back as a few rows. With a timeout of at least a minute, readings inside one
# minute are never more than the timeout apart, so the first and last reading of each
# minute say everything the online rule needs ({unit} is the minute); under a minute each
# reading counts ({unit} is its time). {source} is readings_1m (one device or a few, by
# primary key) or readings (every device, by time: the recent minutes the job settles).
_SPANS_SQL = """
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
            {source}
        ) per_unit
    ) marked
) islands
GROUP BY device_id, island
"""

_MINUTES_BY_DEVICE = """
SELECT device_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts
FROM readings_1m
WHERE device_id = ANY(%(devices)s) AND minute >= %(lo)s AND minute < %(hi)s
GROUP BY device_id, minute
"""

_RAW_BY_DEVICE = """
SELECT device_id, ts AS first_ts, ts AS last_ts
FROM readings
WHERE device_id = ANY(%(devices)s) AND ts >= %(lo)s AND ts < %(hi)s
GROUP BY device_id, ts
"""

_RAW_BY_TIME = """
SELECT device_id, min(ts) AS first_ts, max(ts) AS last_ts
FROM readings
WHERE ts >= %(lo)s AND ts < %(hi)s
GROUP BY device_id, {unit}
"""

# Status messages from the newest one at or before start, each offline one with the first
# reading after it (from raw readings, per metric of the device's type; when those are
# past retention, the first per-minute roll-up that starts after it).
_STATUS_SQL = """
WITH wanted AS (
    SELECT unnest(%(devices)s::text[]) AS device_id
), last_before AS (
    SELECT w.device_id, p.ts
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT p.ts FROM device_status_events p
        WHERE p.device_id = w.device_id AND p.ts <= %(start)s
        ORDER BY p.ts DESC LIMIT 1
    ) p
), events AS (
    SELECT e.device_id, e.ts, e.online
    FROM wanted w
    JOIN device_status_events e ON e.device_id = w.device_id
    LEFT JOIN last_before b ON b.device_id = w.device_id
    WHERE e.ts < %(hi)s AND e.ts >= coalesce(b.ts, '-infinity')
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
    by_time: bool = False,
) -> dict[str, DeviceEvents]:
    """Gather, per device, the reading spans and status messages that decide ``[start, end)``.

    ``by_time`` reads every device's raw readings of the interval through the time index
    (BRIN, migration 0054: for all devices over recent minutes); otherwise each device's
    rows are read by key.
    """
    lo = start - online_timeout
    whole_minutes = online_timeout >= MINUTE
    if by_time:
        unit = "time_bucket(interval '1 minute', ts)" if whole_minutes else "ts"
        source = _RAW_BY_TIME.format(unit=unit)
    else:
        source = _MINUTES_BY_DEVICE if whole_minutes else _RAW_BY_DEVICE
    params = {
        "devices": list(device_ids),
        "lo": lo.replace(second=0, microsecond=0) if whole_minutes else lo,
        "hi": end,
        "start": start,
        "timeout": online_timeout,
    }
    events: dict[str, DeviceEvents] = defaultdict(lambda: DeviceEvents([], []))
    async with conn.transaction(), conn.cursor() as cur:
        # The planner prices the per-event lookups over every chunk far above
        # jit_above_cost; compiling them costs most of a second for a few milliseconds of work.
        await cur.execute("SET LOCAL jit = off")
        if by_time:
            # A chunk without statistics yet (a new day) would be read whole; the BRIN
            # index reads only the block ranges of the interval and the newest ones.
            await cur.execute("SET LOCAL enable_seqscan = off")
        await cur.execute(_SPANS_SQL.format(source=source).encode(), params)
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
    by_time: bool = False,
) -> dict[str, list[Transition]]:
    """Transitions of each device in ``[start, end)`` (the state before start is known)."""
    before = start - MINUTE
    events = await device_events(
        conn, device_ids, start=before, end=end, online_timeout=online_timeout, by_time=by_time
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
    """Replace each device's stored transitions from its start on (two statements)."""
    rows = [
        (device_id, t.ts, t.online, t.reason.value)
        for device_id, found in transitions.items()
        for t in found
    ]
    async with conn.cursor() as cur:
        await cur.execute(
            "DELETE FROM device_availability a"
            " USING unnest(%s::text[], %s::timestamptz[]) AS s(device_id, since)"
            " WHERE a.device_id = s.device_id AND a.ts >= s.since",
            (list(start), list(start.values())),
        )
        if rows:
            await cur.execute(
                "INSERT INTO device_availability (device_id, ts, online, reason)"
                " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::boolean[], %s::text[])",
                (
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                    [r[3] for r in rows],
                ),
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


async def _oldest_raw(conn: AsyncConnection) -> datetime | None:
    """Where the raw readings begin (the first chunk's start), if any are stored."""
    cur = await conn.execute(
        "SELECT min(range_start) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'readings'"
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def _advance(
    conn: AsyncConnection, *, now: datetime, online_timeout: timedelta, max_span: timedelta
) -> tuple[datetime, datetime] | None:
    """Move the settled horizon and mark every device to compute from the old one.

    Short, and committed before any computing: a batch that commits a late reading from
    then on marks its device (the horizon it compares with is already the new one), and a
    run that fails later leaves its marks for the next.
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
        settled_to, timeout_s = await cur.fetchone() or (None, None)
        if timeout_s is not None and timeout_s != online_timeout.total_seconds():
            logger.info("Online timeout changed to %s: recomputing availability", online_timeout)
            await cur.execute("DELETE FROM device_availability")
            await cur.execute("DELETE FROM availability_dirty")
            settled_to = None
        base = settled_to or await _first_roll_up_minute(conn)
        if base is None or base >= settle_to:
            return None
        upto = min(settle_to, base + max_span)
        await cur.execute(
            "UPDATE availability_progress SET settled_to = %s, timeout_s = %s WHERE id",
            (upto, online_timeout.total_seconds()),
        )
        # Every device from the old horizon (now before the new one), by the one mark rule.
        await cur.execute(
            "SELECT mark_availability(array_agg(device_id), array_fill(%s::timestamptz,"
            " ARRAY[count(*)::integer])) FROM devices",
            (base,),
        )
    return base, upto


async def materialize(
    conn: AsyncConnection,
    *,
    now: datetime,
    online_timeout: timedelta,
    max_span: timedelta = MAX_SPAN_PER_RUN,
) -> MaterializeResult:
    """Store the registered devices' transitions up to ``now - timeout - SETTLE_MARGIN``.

    Devices are computed from their mark in ``availability_dirty``: every device from the
    old horizon, and one with a late reading or status message from the earliest of
    those. Only the last step (storing, removing the processed marks) is a transaction
    of its own, so ingest, which marks devices inside its batches, never waits for the
    computing. One run at a time (an advisory lock; a second run returns at once). A
    changed timeout starts the table over.

    Raises:
        ValueError: ``conn`` is not in autocommit mode (the steps commit on their own).
    """
    if not conn.autocommit:
        raise ValueError("materialize needs a connection in autocommit mode")
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (AVAILABILITY_LOCK_KEY,))
    row = await cur.fetchone()
    if not (row and row[0]):
        return MaterializeResult(None, None, 0, 0, 0)
    try:
        advanced = await _advance(conn, now=now, online_timeout=online_timeout, max_span=max_span)
        if advanced is None:
            return MaterializeResult(None, None, 0, 0, 0)
        base, upto = advanced
        cur = await conn.execute(
            "SELECT a.device_id, a.from_ts, a.marks FROM availability_dirty a"
            " JOIN devices d ON d.device_id = a.device_id"
        )
        marks = {device_id: (since, seen) for device_id, since, seen in await cur.fetchall()}
        starts = {
            device_id: min(since.replace(second=0, microsecond=0), base)
            for device_id, (since, _) in marks.items()
        }
        at_base = [d for d, since in starts.items() if since == base]
        oldest_raw = await _oldest_raw(conn)
        # Every device's recent readings through the time index when raw readings reach
        # back far enough; otherwise (a first run over old data) by key from readings_1m.
        by_time = oldest_raw is not None and oldest_raw <= base - online_timeout - MINUTE
        transitions = await _transitions(
            conn, at_base, start=base, end=upto, online_timeout=online_timeout, by_time=by_time
        )
        for device_id, since in starts.items():
            if since < base:
                transitions |= await _transitions(
                    conn, [device_id], start=since, end=upto, online_timeout=online_timeout
                )
        async with conn.transaction():
            written = await _store(conn, transitions, starts)
            await conn.execute(
                "DELETE FROM availability_dirty a"
                " USING unnest(%s::text[], %s::bigint[]) AS s(device_id, marks)"
                " WHERE a.device_id = s.device_id AND a.marks = s.marks",
                (list(marks), [seen for _, seen in marks.values()]),
            )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (AVAILABILITY_LOCK_KEY,))
    logger.debug("Availability settled to %s: %d transitions", upto, written)
    recomputed = sum(1 for since in starts.values() if since < base)
    return MaterializeResult(base, upto, len(starts), written, recomputed)


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
