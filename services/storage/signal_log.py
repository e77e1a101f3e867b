"""Keep the shared park signals per minute (``park_signals_1m``) for readers of the database.

The publisher records each computation it shares; a minute keeps its last one. Grafana
(deploy/grafana) reads this table, so the signals it charts are the ones PRODUCT.md
defines, computed once, in ``services.core.signals``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from psycopg import AsyncConnection

from schemas.signals import ParkSignals
from services.core.history import floor_minute

_UPSERT_SQL = """
INSERT INTO park_signals_1m (
    park_id, minute, as_of, window_s, health_index, online_rate, operating_rate,
    capacity_utilization, power_kw, energy_kwh, energy_intensity_kwh_per_unit, alarm_rate,
    devices_registered, devices_online, devices_in_alarm, factories_with_lines,
    factories_operating, alarms
) VALUES (
    %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb
)
ON CONFLICT (park_id, minute) DO UPDATE SET
    as_of = excluded.as_of, window_s = excluded.window_s,
    health_index = excluded.health_index, online_rate = excluded.online_rate,
    operating_rate = excluded.operating_rate,
    capacity_utilization = excluded.capacity_utilization, power_kw = excluded.power_kw,
    energy_kwh = excluded.energy_kwh,
    energy_intensity_kwh_per_unit = excluded.energy_intensity_kwh_per_unit,
    alarm_rate = excluded.alarm_rate, devices_registered = excluded.devices_registered,
    devices_online = excluded.devices_online, devices_in_alarm = excluded.devices_in_alarm,
    factories_with_lines = excluded.factories_with_lines,
    factories_operating = excluded.factories_operating, alarms = excluded.alarms
WHERE park_signals_1m.as_of <= excluded.as_of
"""


def _row(body: ParkSignals) -> tuple[object, ...]:
    values, counts = body.signals, body.counts
    alarms = orjson.dumps([a.model_dump(mode="json") for a in body.alarms]).decode()
    return (
        body.park_id,
        floor_minute(body.as_of),
        body.as_of,
        body.window_s,
        values.health_index,
        values.online_rate,
        values.operating_rate,
        values.capacity_utilization,
        values.power_kw,
        values.energy_kwh,
        values.energy_intensity_kwh_per_unit,
        values.alarm_rate,
        counts.devices_registered,
        counts.devices_online,
        counts.devices_in_alarm,
        counts.factories_with_lines,
        counts.factories_operating,
        alarms,
    )


async def record(conn: AsyncConnection, bodies: Sequence[ParkSignals]) -> None:
    """Upsert each park's signals into its minute (a later ``as_of`` replaces an earlier)."""
    if not bodies:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_UPSERT_SQL, [_row(b) for b in bodies])
