"""Read queries behind the live park and city signals: latest values, statuses, increases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from schemas.fleet import MetricKind
from services.core.calendar import FactoryTime, factory_times
from services.core.history import floor_minute
from services.core.registry import DeviceEntry, ParkInfo
from services.core.signals import (
    DeviceObservation,
    MetricValue,
    ParkSignals,
    StatusPoint,
    park_signals,
)

# Every metric's newest reading of the parks' devices; those after as_of (as_of in the
# past) are replaced by a lookup in readings.
_LATEST_SQL = """
SELECT l.device_id, l.metric, l.ts, l.value, l.value_text
FROM devices d
JOIN device_latest l ON l.device_id = d.device_id
WHERE d.park_id = ANY(%(parks)s)
"""

_LATEST_BEFORE_SQL = """
SELECT k.device_id, k.metric, r.ts, r.value, r.value_text
FROM unnest(%(devices)s::text[], %(metrics)s::text[]) AS k(device_id, metric)
CROSS JOIN LATERAL (
    SELECT r.ts, r.value, r.value_text FROM readings r
    WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.ts <= %(as_of)s
    ORDER BY r.ts DESC LIMIT 1
) r
"""

# The retained status at as_of: device_status when its message is not after as_of,
# otherwise the newest recorded status event at or before as_of.
_STATUS_SQL = """
SELECT s.device_id, s.online, s.status_ts AS ts
FROM devices d
JOIN device_status s ON s.device_id = d.device_id
WHERE d.park_id = ANY(%(parks)s) AND s.online IS NOT NULL AND s.status_ts <= %(as_of)s
UNION ALL
SELECT s.device_id, e.online, e.ts
FROM devices d
JOIN device_status s ON s.device_id = d.device_id
CROSS JOIN LATERAL (
    SELECT e.online, e.ts FROM device_status_events e
    WHERE e.device_id = s.device_id AND e.ts <= %(as_of)s
    ORDER BY e.ts DESC LIMIT 1
) e
WHERE d.park_id = ANY(%(parks)s) AND s.status_ts > %(as_of)s
"""

# Counter increase over the live window (start, end] by PRODUCT.md's rule, exactly, from
# the per-minute roll-ups and the raw readings of the window's first and last minute F and
# L. A step belongs to the minute of its later reading. Inside the window's whole minutes
# (F, L) the roll-ups hold every step (inc_within + inc_from_prev). In F and L, the step
# into the minute's first reading (from the last reading before the minute: the baseline)
# is its inc_from_prev, counted when that reading is inside the window; the steps between
# later readings come from the raw readings of the minute.
#
# The roll-ups are only as new as the last fold. A counter with keys in rollup_dirty at or
# before L (committed, not folded yet) has stale roll-ups from its first dirty minute D on
# (D's own, and the stitch of every later minute); its minutes before D are exact. So such
# a counter is read from its roll-ups up to D (whole minutes, and F's edge) and raw from
# D to the window's end, the baseline being its last reading before D; when D <= F it is
# read raw over the whole window, baseline included. Raw reads are bounded by what the
# fold has not reached (about a second of data), not by the window. One statement, so one
# snapshot: a fold commits its roll-ups and removes its keys together.
_INCREASE_SQL = """
WITH park_keys AS (
    SELECT d.device_id, m.metric
    FROM devices d
    JOIN device_type_metrics m ON m.type_id = d.type_id AND m.kind = %(counter_kind)s
    WHERE d.park_id = ANY(%(parks)s)
), dirty AS (
    SELECT x.device_id, x.metric, min(x.minute) AS first_dirty
    FROM rollup_dirty x
    JOIN park_keys k ON k.device_id = x.device_id AND k.metric = x.metric
    WHERE x.minute <= %(last)s
    GROUP BY x.device_id, x.metric
), keys AS (
    -- Read from the roll-ups up to ``upto``: L when folded, else the first dirty minute.
    SELECT k.device_id, k.metric, coalesce(d.first_dirty, %(last)s) AS upto,
           d.first_dirty IS NULL AS folded
    FROM park_keys k
    LEFT JOIN dirty d ON d.device_id = k.device_id AND d.metric = k.metric
    WHERE d.first_dirty IS NULL OR d.first_dirty > %(first)s
), minutes AS (
    SELECT r.device_id, r.metric,
           sum(CASE
               WHEN r.minute > %(first)s AND r.minute < k.upto
                   THEN coalesce(r.inc_within, 0) + coalesce(r.inc_from_prev, 0)
               WHEN (r.minute = %(first)s OR (k.folded AND r.minute = %(last)s))
                   AND r.first_ts > %(start)s AND r.first_ts <= %(end)s
                   THEN coalesce(r.inc_from_prev, 0)
               ELSE 0
           END) AS increase
    FROM keys k
    JOIN readings_1m r ON r.device_id = k.device_id AND r.metric = k.metric
    WHERE r.minute >= %(first)s AND r.minute <= k.upto
    GROUP BY r.device_id, r.metric
), edges AS (
    SELECT device_id, metric, sum(counter_step(previous, value)) AS increase
    FROM (
        SELECT k.device_id, k.metric, r.ts, r.value,
               lag(r.value) OVER (PARTITION BY k.device_id, k.metric ORDER BY r.ts) AS previous
        FROM keys k
        JOIN readings r ON r.device_id = k.device_id AND r.metric = k.metric
        WHERE r.ts >= %(first)s AND r.ts < %(first)s + interval '1 minute'
        UNION ALL
        SELECT k.device_id, k.metric, r.ts, r.value,
               lag(r.value) OVER (PARTITION BY k.device_id, k.metric ORDER BY r.ts) AS previous
        FROM keys k
        JOIN readings r ON r.device_id = k.device_id AND r.metric = k.metric
        WHERE k.folded AND r.ts >= %(last)s AND r.ts <= %(end)s AND %(last)s > %(first)s
    ) e
    WHERE ts > %(start)s AND ts <= %(end)s AND previous IS NOT NULL
    GROUP BY device_id, metric
), raw_after AS (
    -- Raw readings after ``after`` count, the last one at or before it is the baseline.
    SELECT device_id, metric,
           CASE WHEN first_dirty > %(first)s THEN first_dirty - interval '1 microsecond'
                ELSE %(start)s END AS after
    FROM dirty
), raw_keys AS (
    -- Only counters with a raw reading to count look up a baseline (a dirty key of late
    -- data before the window has none; the lookup is the costly half).
    SELECT u.device_id, u.metric, u.after
    FROM raw_after u
    WHERE EXISTS (
        SELECT 1 FROM readings w
        WHERE w.device_id = u.device_id AND w.metric = u.metric
          AND w.ts > u.after AND w.ts <= %(end)s
    )
), raw AS (
    SELECT device_id, metric, coalesce(sum(counter_step(previous, value)), 0) AS increase
    FROM (
        SELECT u.device_id, u.metric, u.after, r.ts, r.value,
               lag(r.value) OVER (PARTITION BY u.device_id, u.metric ORDER BY r.ts) AS previous
        FROM raw_keys u
        CROSS JOIN LATERAL (
            (SELECT b.ts, b.value FROM readings b
             WHERE b.device_id = u.device_id AND b.metric = u.metric AND b.ts <= u.after
             ORDER BY b.ts DESC LIMIT 1)
            UNION ALL
            (SELECT w.ts, w.value FROM readings w
             WHERE w.device_id = u.device_id AND w.metric = u.metric
               AND w.ts > u.after AND w.ts <= %(end)s)
        ) r
    ) s
    WHERE ts > after
    GROUP BY device_id, metric
)
SELECT device_id, metric, sum(increase)
FROM (
    SELECT coalesce(a.device_id, b.device_id) AS device_id,
           coalesce(a.metric, b.metric) AS metric,
           coalesce(a.increase, 0) + coalesce(b.increase, 0) AS increase
    FROM minutes a
    FULL JOIN edges b ON a.device_id = b.device_id AND a.metric = b.metric
    UNION ALL
    SELECT device_id, metric, increase FROM raw
) parts
GROUP BY device_id, metric
"""


async def counter_increases(
    conn: AsyncConnection,
    park_ids: Sequence[str],
    start: datetime,
    end: datetime,
) -> dict[tuple[str, str], float]:
    """Return the increase over ``(start, end]`` of every counter of the parks' devices.

    Counters without a reading in the window are left out (their increase is 0).
    """
    params = {
        "parks": list(park_ids),
        "start": start,
        "end": end,
        "first": floor_minute(start),
        "last": floor_minute(end),
        "counter_kind": MetricKind.COUNTER.value,
    }
    async with conn.cursor() as cur:
        await cur.execute(_INCREASE_SQL, params)
        return {(row[0], row[1]): float(row[2]) for row in await cur.fetchall()}


async def _latest(
    conn: AsyncConnection, park_ids: Sequence[str], as_of: datetime
) -> dict[str, dict[str, MetricValue]]:
    """Per device and metric, the newest reading at or before ``as_of``."""
    latest: dict[str, dict[str, MetricValue]] = defaultdict(dict)
    newer: list[tuple[str, str]] = []
    # Binary results: a few thousand timestamps and floats parse faster than their text.
    async with conn.cursor(binary=True) as cur:
        await cur.execute(_LATEST_SQL, {"parks": list(park_ids)})
        for device_id, metric, ts, value, text in await cur.fetchall():
            if ts <= as_of:
                latest[device_id][metric] = MetricValue(ts=ts, value=value, text=text)
            else:
                newer.append((device_id, metric))
        if newer:
            await cur.execute(
                _LATEST_BEFORE_SQL,
                {
                    "devices": [k[0] for k in newer],
                    "metrics": [k[1] for k in newer],
                    "as_of": as_of,
                },
            )
            for device_id, metric, ts, value, text in await cur.fetchall():
                latest[device_id][metric] = MetricValue(ts=ts, value=value, text=text)
    return latest


async def observe(
    conn: AsyncConnection,
    devices: Sequence[DeviceEntry],
    *,
    as_of: datetime,
    window_s: float,
) -> list[DeviceObservation]:
    """Gather what the signals need about each device at ``as_of`` over the window.

    The queries select by park (the devices' parks), which keeps their parameters small.
    """
    park_ids = sorted({d.park_id for d in devices})
    start = as_of - timedelta(seconds=window_s)
    latest = await _latest(conn, park_ids, as_of)
    statuses: dict[str, StatusPoint] = {}
    async with conn.cursor() as cur:
        await cur.execute(_STATUS_SQL, {"parks": park_ids, "as_of": as_of})
        for device_id, online, ts in await cur.fetchall():
            statuses[device_id] = StatusPoint(online=online, ts=ts)
    increases = await counter_increases(conn, park_ids, start, as_of)
    observations = []
    for device in devices:
        values = latest.get(device.device_id, {})
        observations.append(
            DeviceObservation(
                device=device,
                last_reading_ts=max((v.ts for v in values.values()), default=None),
                status=statuses.get(device.device_id),
                latest=values,
                increases={
                    metric: increases.get((device.device_id, metric), 0.0)
                    for metric, rule in device.metrics.items()
                    if rule.kind is MetricKind.COUNTER
                },
                # The newest reading of a metric is inside the window iff any reading is.
                window_metrics=frozenset(m for m, v in values.items() if v.ts > start),
            )
        )
    return observations


@dataclass(frozen=True, slots=True)
class LiveState:
    """A park at one instant: what was observed of each device, its planned time, its signals."""

    park: ParkInfo
    observations: tuple[DeviceObservation, ...]
    planned: Mapping[str, FactoryTime]
    signals: ParkSignals


async def live_states(
    conn: AsyncConnection,
    parks: Sequence[ParkInfo],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> list[LiveState]:
    """Observe the parks at ``as_of`` (one query for all) and compute each one's signals.

    The ``/signals`` route, the city signals, the live stream and the shared signals all
    come through here.
    """
    devices = [d for park in parks for d in park.devices]
    observations = await observe(conn, devices, as_of=as_of, window_s=window_s)
    by_park: dict[str, list[DeviceObservation]] = defaultdict(list)
    for observation in observations:
        by_park[observation.device.park_id].append(observation)
    states = []
    for park in parks:
        members = tuple(by_park.get(park.park_id, ()))
        planned = factory_times(park.calendars, as_of=as_of, window_s=window_s)
        signals = park_signals(
            members,
            as_of=as_of,
            window_s=window_s,
            online_timeout_s=online_timeout_s,
            planned=planned,
        )
        states.append(LiveState(park, members, planned, signals))
    return states


async def live_signals(
    conn: AsyncConnection,
    parks: Sequence[ParkInfo],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> list[ParkSignals]:
    """Compute the live signals of each park at ``as_of`` over the window."""
    states = await live_states(
        conn, parks, as_of=as_of, window_s=window_s, online_timeout_s=online_timeout_s
    )
    return [state.signals for state in states]
