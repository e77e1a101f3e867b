"""Read queries of the live stream that the signals do not already answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from services.api.live_frames import DeviceAlarm, FactoryName

# How far back the start of an alarm is looked for: a device in alarm for longer shows
# the start of this horizon, and the search stays a bounded index range scan.
ALARM_LOOKBACK = timedelta(hours=24)

# The first reading of the current run of alarming readings of each (device, metric):
# the first one after the newest reading at or before the alarming one that was normal.
# A state alarm's run is the run of that same state; a gauge's, of values beyond the bound.
_ALARM_SINCE_SQL = """
WITH k AS (
    SELECT * FROM unnest(
        %(devices)s::text[], %(metrics)s::text[], %(reasons)s::text[],
        %(thresholds)s::float8[], %(texts)s::text[], %(latest)s::timestamptz[]
    ) AS k(device_id, metric, reason, threshold, text, latest)
)
SELECT k.device_id, k.metric, (
    SELECT min(r.ts) FROM readings r
    WHERE r.device_id = k.device_id AND r.metric = k.metric
      AND r.ts <= k.latest AND r.ts >= %(horizon)s
      AND r.ts > coalesce((
          SELECT max(n.ts) FROM readings n
          WHERE n.device_id = k.device_id AND n.metric = k.metric
            AND n.ts <= k.latest AND n.ts >= %(horizon)s
            AND NOT coalesce(CASE k.reason
                WHEN 'state' THEN n.value_text = k.text
                WHEN 'above_max' THEN n.value > k.threshold
                WHEN 'below_min' THEN n.value < k.threshold
            END, false)
      ), '-infinity'::timestamptz)
) AS since
FROM k
"""


async def metric_units(conn: AsyncConnection) -> dict[tuple[str, str], str]:
    """Return the unit of each (device type, metric)."""
    cur = await conn.execute("SELECT type_id, metric, unit FROM device_type_metrics")
    return {(type_id, metric): unit for type_id, metric, unit in await cur.fetchall()}


async def factory_names(conn: AsyncConnection, park_id: str) -> dict[str, FactoryName]:
    """Return each factory of a park by id, with its name and industry."""
    cur = await conn.execute(
        "SELECT factory_id, name, industry FROM factories WHERE park_id = %s ORDER BY factory_id",
        (park_id,),
    )
    return {fid: FactoryName(name, industry) for fid, name, industry in await cur.fetchall()}


async def alarm_starts(
    conn: AsyncConnection, alarms: Sequence[DeviceAlarm], *, as_of: datetime
) -> dict[tuple[str, str], datetime | None]:
    """Return when each cause of ``alarms`` began: (device, metric) → first alarming reading.

    Searched back ``ALARM_LOOKBACK`` from ``as_of``; an alarm older than that shows the
    first alarming reading inside the horizon.
    """
    causes = [(a.device_id, c) for a in alarms for c in a.causes]
    if not causes:
        return {}
    params = {
        "devices": [device for device, _ in causes],
        "metrics": [c.metric for _, c in causes],
        "reasons": [c.reason for _, c in causes],
        "thresholds": [c.threshold for _, c in causes],
        "texts": [c.text for _, c in causes],
        "latest": [c.ts for _, c in causes],
        "horizon": as_of - ALARM_LOOKBACK,
    }
    cur = await conn.execute(_ALARM_SINCE_SQL, params)
    return {(device, metric): since for device, metric, since in await cur.fetchall()}
