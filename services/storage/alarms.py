"""Alarms over time: when each of a device's current alarms began (the live stream shows it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from services.core.alarms import Alarm, AlarmReason

# How far back the start of an alarm is looked for: a device in alarm for longer shows
# the start of this horizon, and the search stays a bounded index range scan.
ALARM_LOOKBACK = timedelta(hours=24)

# The first reading of the current run of alarming readings of each (device, metric):
# the first one after the newest reading at or before the alarming one that was normal.
# A state alarm's run is the run of that same state; a gauge's, of values beyond the bound
# (the reasons are core.alarms.AlarmReason's, bound).
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
                WHEN %(state)s THEN n.value_text = k.text
                WHEN %(above_max)s THEN n.value > k.threshold
                WHEN %(below_min)s THEN n.value < k.threshold
            END, false)
      ), '-infinity'::timestamptz)
) AS since
FROM k
"""


async def alarm_starts(
    conn: AsyncConnection, alarms: Sequence[Alarm], *, as_of: datetime
) -> dict[tuple[str, str], datetime | None]:
    """Return when each of ``alarms`` began: (device, metric) → first alarming reading.

    Searched back ``ALARM_LOOKBACK`` from ``as_of``; an alarm older than that shows the
    first alarming reading inside the horizon.
    """
    if not alarms:
        return {}
    params = {
        "devices": [a.device_id for a in alarms],
        "metrics": [a.metric for a in alarms],
        "reasons": [a.reason.value for a in alarms],
        "thresholds": [a.threshold for a in alarms],
        "texts": [a.text for a in alarms],
        "latest": [a.ts for a in alarms],
        "horizon": as_of - ALARM_LOOKBACK,
        "state": AlarmReason.STATE.value,
        "above_max": AlarmReason.ABOVE_MAX.value,
        "below_min": AlarmReason.BELOW_MIN.value,
    }
    cur = await conn.execute(_ALARM_SINCE_SQL, params)
    return {(device, metric): since for device, metric, since in await cur.fetchall()}
