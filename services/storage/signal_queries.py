"""Read queries behind the live park and city signals: registry, latest values, increases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from schemas.fleet import MetricKind
from services.core.history import RegistryCounts
from services.core.registry import DeviceEntry, MetricRule
from services.core.signals import (
    ENERGY_METRIC,
    LINE_TYPE,
    METER_TYPE,
    DeviceObservation,
    MetricValue,
    ParkSignals,
    StatusPoint,
    can_alarm,
    has_counter,
    park_signals,
)

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ParkInfo:
    """A park and its registered devices, with the rules their signals are judged by."""

    park_id: str
    name: str
    city: str
    devices: tuple[DeviceEntry, ...]

    def registry_counts(self) -> RegistryCounts:
        """The park's devices by the role they play in the signals."""
        lines = [d for d in self.devices if d.type_id == LINE_TYPE]
        return RegistryCounts(
            devices=len(self.devices),
            factories_with_lines=len({d.factory_id for d in lines}),
            lines=len(lines),
            line_capacity_units_per_hour=sum(d.capacity_units_per_hour or 0.0 for d in lines),
            meters=sum(d.type_id == METER_TYPE for d in self.devices),
            energy_devices=sum(has_counter(d, ENERGY_METRIC) for d in self.devices),
            alarm_devices=sum(any(map(can_alarm, d.metrics.values())) for d in self.devices),
        )


_TYPE_METRICS_SQL = """
SELECT type_id, metric, kind, min_value, max_value, alarm_min, alarm_max, states, alarm_states
FROM device_type_metrics
"""

_PARKS_SQL = """
SELECT park_id, name, city FROM parks WHERE {condition} ORDER BY park_id
"""

_DEVICES_SQL = """
SELECT d.device_id, d.park_id, d.factory_id, d.type_id, d.capacity_units_per_hour, d.thresholds
FROM devices d
WHERE d.park_id = ANY(%s)
ORDER BY d.device_id
"""


def _rule(row: Mapping[str, Any]) -> MetricRule:
    return MetricRule(
        kind=MetricKind(row["kind"]),
        min_value=row["min_value"],
        max_value=row["max_value"],
        alarm_min=row["alarm_min"],
        alarm_max=row["alarm_max"],
        states=frozenset(row["states"] or ()),
        alarm_states=frozenset(row["alarm_states"] or ()),
    )


def _with_thresholds(rule: MetricRule, override: Mapping[str, Any]) -> MetricRule:
    """A device's own thresholds replace its type's (both bounds, as in the fleet file)."""
    return MetricRule(
        kind=rule.kind,
        min_value=rule.min_value,
        max_value=rule.max_value,
        alarm_min=override.get("min"),
        alarm_max=override.get("max"),
        states=rule.states,
        alarm_states=rule.alarm_states,
    )


async def _load_parks(conn: AsyncConnection, condition: str, param: str) -> list[ParkInfo]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PARKS_SQL.format(condition=condition).encode(), (param,))
        parks = await cur.fetchall()
        if not parks:
            return []
        await cur.execute(_TYPE_METRICS_SQL)
        rules: dict[str, dict[str, MetricRule]] = defaultdict(dict)
        for row in await cur.fetchall():
            rules[row["type_id"]][row["metric"]] = _rule(row)
        await cur.execute(_DEVICES_SQL, ([p["park_id"] for p in parks],))
        devices: dict[str, list[DeviceEntry]] = defaultdict(list)
        for row in await cur.fetchall():
            metrics = dict(rules.get(row["type_id"], {}))
            for metric, override in (row["thresholds"] or {}).items():
                if metric in metrics:
                    metrics[metric] = _with_thresholds(metrics[metric], override)
            devices[row["park_id"]].append(
                DeviceEntry(
                    device_id=row["device_id"],
                    park_id=row["park_id"],
                    factory_id=row["factory_id"],
                    type_id=row["type_id"],
                    metrics=metrics,
                    capacity_units_per_hour=row["capacity_units_per_hour"],
                )
            )
    return [
        ParkInfo(p["park_id"], p["name"], p["city"], tuple(devices.get(p["park_id"], ())))
        for p in parks
    ]


async def load_park(conn: AsyncConnection, park_id: str) -> ParkInfo | None:
    """Return a park with its devices and their rules, or None when it is not registered."""
    parks = await _load_parks(conn, "park_id = %s", park_id)
    return parks[0] if parks else None


async def load_city(conn: AsyncConnection, city: str) -> list[ParkInfo]:
    """Return the parks of a city (matched without regard to case), with their devices."""
    return await _load_parks(conn, "lower(city) = lower(%s)", city)


# The newest reading at or before as_of of every metric of the devices. device_latest
# answers for metrics whose newest reading is not after as_of (the live case); the others
# (as_of in the past) look it up in readings.
_LATEST_SQL = """
SELECT l.device_id, l.metric, l.ts, l.value, l.value_text
FROM device_latest l
WHERE l.device_id = ANY(%(devices)s) AND l.ts <= %(as_of)s
UNION ALL
SELECT l.device_id, l.metric, r.ts, r.value, r.value_text
FROM device_latest l
CROSS JOIN LATERAL (
    SELECT r.ts, r.value, r.value_text FROM readings r
    WHERE r.device_id = l.device_id AND r.metric = l.metric AND r.ts <= %(as_of)s
    ORDER BY r.ts DESC LIMIT 1
) r
WHERE l.device_id = ANY(%(devices)s) AND l.ts > %(as_of)s
"""

# The retained status at as_of: device_status when its message is not after as_of,
# otherwise the newest recorded status event at or before as_of.
_STATUS_SQL = """
SELECT s.device_id, s.online, s.status_ts AS ts
FROM device_status s
WHERE s.device_id = ANY(%(devices)s) AND s.online IS NOT NULL AND s.status_ts <= %(as_of)s
UNION ALL
SELECT s.device_id, e.online, e.ts
FROM device_status s
CROSS JOIN LATERAL (
    SELECT e.online, e.ts FROM device_status_events e
    WHERE e.device_id = s.device_id AND e.ts <= %(as_of)s
    ORDER BY e.ts DESC LIMIT 1
) e
WHERE s.device_id = ANY(%(devices)s) AND s.status_ts > %(as_of)s
"""

# Counter increase over the live window (start, end] by PRODUCT.md's rule, exactly:
# whole minutes [m1, m2) inside the window come from readings_1m (their inside steps and
# the step from the reading before them); the partial minutes (start, m1) and [m2, end]
# from raw readings, with the reading at or before start as the baseline and the last one
# before m2 as the predecessor of the first in [m2, end].
_INCREASE_SQL = """
WITH keys AS (
    SELECT * FROM unnest(%(devices)s::text[], %(metrics)s::text[]) AS k(device_id, metric)
), raw AS (
    SELECT k.device_id, k.metric, r.ts, r.value
    FROM keys k
    JOIN readings r ON r.device_id = k.device_id AND r.metric = k.metric
    WHERE (r.ts > %(start)s AND r.ts < %(m1)s) OR (r.ts >= %(m2)s AND r.ts <= %(end)s)
), anchors AS (
    SELECT k.device_id, k.metric, b.ts, b.value
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT r.ts, r.value FROM readings r
        WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.ts <= %(start)s
        ORDER BY r.ts DESC LIMIT 1
    ) b
    UNION
    SELECT k.device_id, k.metric, b.ts, b.value
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT r.ts, r.value FROM readings r
        WHERE r.device_id = k.device_id AND r.metric = k.metric
          AND r.ts > %(start)s AND r.ts < %(m2)s
        ORDER BY r.ts DESC LIMIT 1
    ) b
), points AS (
    SELECT * FROM raw UNION SELECT * FROM anchors
), steps AS (
    SELECT device_id, metric, ts,
           counter_step(lag(value) OVER (PARTITION BY device_id, metric ORDER BY ts), value)
               AS step
    FROM points
), raw_increase AS (
    SELECT device_id, metric,
           sum(step) FILTER (
               WHERE (ts > %(start)s AND ts < %(m1)s) OR (ts >= %(m2)s AND ts <= %(end)s)
           ) AS increase
    FROM steps
    GROUP BY device_id, metric
), minute_increase AS (
    SELECT r.device_id, r.metric,
           sum(coalesce(r.inc_within, 0) + coalesce(r.inc_from_prev, 0)) AS increase
    FROM keys k
    JOIN readings_1m r ON r.device_id = k.device_id AND r.metric = k.metric
    WHERE r.minute >= %(m1)s AND r.minute < %(m2)s
    GROUP BY r.device_id, r.metric
)
SELECT coalesce(a.device_id, b.device_id) AS device_id, coalesce(a.metric, b.metric) AS metric,
       coalesce(a.increase, 0) + coalesce(b.increase, 0) AS increase
FROM raw_increase a
FULL JOIN minute_increase b ON a.device_id = b.device_id AND a.metric = b.metric
"""


def _floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def whole_minutes(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Return ``(m1, m2)``: the whole minutes ``[m1, m2)`` inside the window ``(start, end]``.

    The window is split into ``(start, m1)``, ``[m1, m2)`` and ``[m2, end]``; when it holds
    no whole minute, ``m1 = m2 = end`` and the raw parts cover all of it.
    """
    m1 = _floor_minute(start) + MINUTE
    m2 = _floor_minute(end)
    if m1 > m2:
        return end, end
    return m1, m2


async def counter_increases(
    conn: AsyncConnection,
    keys: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
) -> dict[tuple[str, str], float]:
    """Return the increase of each (device, counter metric) over ``(start, end]``."""
    if not keys:
        return {}
    m1, m2 = whole_minutes(start, end)
    params = {
        "devices": [k[0] for k in keys],
        "metrics": [k[1] for k in keys],
        "start": start,
        "end": end,
        "m1": m1,
        "m2": m2,
    }
    async with conn.cursor() as cur:
        await cur.execute(_INCREASE_SQL, params)
        return {(row[0], row[1]): float(row[2]) for row in await cur.fetchall()}


async def observe(
    conn: AsyncConnection,
    devices: Sequence[DeviceEntry],
    *,
    as_of: datetime,
    window_s: float,
) -> list[DeviceObservation]:
    """Gather what the signals need about each device at ``as_of`` over the window."""
    ids = [d.device_id for d in devices]
    start = as_of - timedelta(seconds=window_s)
    params = {"devices": ids, "as_of": as_of}
    latest: dict[str, dict[str, MetricValue]] = defaultdict(dict)
    statuses: dict[str, StatusPoint] = {}
    async with conn.cursor() as cur:
        await cur.execute(_LATEST_SQL, params)
        for device_id, metric, ts, value, text in await cur.fetchall():
            latest[device_id][metric] = MetricValue(ts=ts, value=value, text=text)
        await cur.execute(_STATUS_SQL, params)
        for device_id, online, ts in await cur.fetchall():
            statuses[device_id] = StatusPoint(online=online, ts=ts)
    counter_keys = [
        (d.device_id, metric)
        for d in devices
        for metric, rule in d.metrics.items()
        if rule.kind is MetricKind.COUNTER
    ]
    increases = await counter_increases(conn, counter_keys, start, as_of)
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


async def live_signals(
    conn: AsyncConnection,
    parks: Sequence[ParkInfo],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> list[ParkSignals]:
    """Compute the live signals of each park at ``as_of`` over the window."""
    devices = [d for park in parks for d in park.devices]
    observations = await observe(conn, devices, as_of=as_of, window_s=window_s)
    by_park: dict[str, list[DeviceObservation]] = defaultdict(list)
    for observation in observations:
        by_park[observation.device.park_id].append(observation)
    return [
        park_signals(
            by_park.get(park.park_id, []),
            as_of=as_of,
            window_s=window_s,
            online_timeout_s=online_timeout_s,
        )
        for park in parks
    ]
