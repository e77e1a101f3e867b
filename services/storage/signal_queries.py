"""Read queries behind the live park and city signals: registry, latest values, increases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from schemas.fleet import DEFAULT_TIMEZONE, Calendar, MetricKind
from services.core.calendar import WorkCalendar, calendar_in_force, factory_times, work_calendar
from services.core.history import RegistryCounts, floor_minute
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


@dataclass(frozen=True, slots=True)
class ParkInfo:
    """A park and its registered devices, with the rules their signals are judged by.

    ``calendars`` holds, per factory, the calendar in force (its own or the park's, in the
    park's time zone); a factory without one is always scheduled.
    """

    park_id: str
    name: str
    city: str
    devices: tuple[DeviceEntry, ...]
    timezone: str = DEFAULT_TIMEZONE
    calendars: Mapping[str, WorkCalendar | None] = field(default_factory=dict)

    @property
    def planned(self) -> bool:
        """Whether any factory of the park follows a calendar."""
        return any(c is not None for c in self.calendars.values())

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

_DEVICES_SQL = """
SELECT d.device_id, d.park_id, d.factory_id, d.type_id, d.capacity_units_per_hour, d.thresholds
FROM devices d
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


# Each fleet load writes a fleet_versions row; the registry read for a version is kept
# and reused until the next load (a few milliseconds saved on every signals request).
# Keyed by database too, so one process may serve (or test) several.
_REGISTRY_CACHE_SIZE = 8
_registry_cache: dict[tuple[str, int, datetime], dict[str, ParkInfo]] = {}


async def _read_registry(conn: AsyncConnection) -> dict[str, ParkInfo]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT park_id, name, city, timezone, calendar FROM parks ORDER BY park_id"
        )
        parks = await cur.fetchall()
        await cur.execute("SELECT factory_id, park_id, calendar FROM factories")
        factories = await cur.fetchall()
        await cur.execute(_TYPE_METRICS_SQL)
        rules: dict[str, dict[str, MetricRule]] = defaultdict(dict)
        for row in await cur.fetchall():
            rules[row["type_id"]][row["metric"]] = _rule(row)
        await cur.execute(_DEVICES_SQL)
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
    calendars: dict[str, dict[str, WorkCalendar | None]] = defaultdict(dict)
    zones = {p["park_id"]: p for p in parks}
    for row in factories:
        park = zones[row["park_id"]]
        found = calendar_in_force(_calendar(park["calendar"]), _calendar(row["calendar"]))
        calendars[row["park_id"]][row["factory_id"]] = work_calendar(found, park["timezone"])
    return {
        p["park_id"]: ParkInfo(
            p["park_id"],
            p["name"],
            p["city"],
            tuple(devices.get(p["park_id"], ())),
            timezone=p["timezone"],
            calendars=calendars.get(p["park_id"], {}),
        )
        for p in parks
    }


def _calendar(stored: Mapping[str, Any] | None) -> Calendar | None:
    """A stored calendar (written by a validated fleet load), or None."""
    return None if stored is None else Calendar.model_validate(stored)


async def registry(conn: AsyncConnection) -> dict[str, ParkInfo]:
    """Return every park with its devices, read once per fleet version."""
    cur = await conn.execute(
        "SELECT version, loaded_at FROM fleet_versions ORDER BY version DESC LIMIT 1"
    )
    row = await cur.fetchone()
    if row is None:  # parks written without a fleet load: nothing to key a cache on
        return await _read_registry(conn)
    info = conn.info
    key = (f"{info.host}:{info.port}/{info.dbname}", int(row[0]), row[1])
    found = _registry_cache.get(key)
    if found is None:
        found = await _read_registry(conn)
        if len(_registry_cache) >= _REGISTRY_CACHE_SIZE:
            _registry_cache.pop(next(iter(_registry_cache)))
        _registry_cache[key] = found
    return found


async def load_park(conn: AsyncConnection, park_id: str) -> ParkInfo | None:
    """Return a park with its devices and their rules, or None when it is not registered."""
    return (await registry(conn)).get(park_id)


async def load_city(conn: AsyncConnection, city: str) -> list[ParkInfo]:
    """Return the parks of a city (matched without regard to case), with their devices."""
    wanted = city.casefold()
    return [p for p in (await registry(conn)).values() if p.city.casefold() == wanted]


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
# The roll-ups are only as new as the last fold: a counter with a key in rollup_dirty at or
# before L (committed, not folded yet; it may change its own minutes and the stitch of the
# next one) is read raw over the window instead, baseline included. One statement, so one
# snapshot: a fold commits its roll-ups and removes its keys together.
_INCREASE_SQL = """
WITH park_keys AS (
    SELECT d.device_id, m.metric
    FROM devices d
    JOIN device_type_metrics m ON m.type_id = d.type_id AND m.kind = 'counter'
    WHERE d.park_id = ANY(%(parks)s)
), unfolded AS (
    SELECT DISTINCT x.device_id, x.metric
    FROM rollup_dirty x
    JOIN park_keys k ON k.device_id = x.device_id AND k.metric = x.metric
    WHERE x.minute <= %(last)s
), keys AS (
    SELECT k.device_id, k.metric FROM park_keys k
    WHERE NOT EXISTS (
        SELECT 1 FROM unfolded u WHERE u.device_id = k.device_id AND u.metric = k.metric
    )
), minutes AS (
    SELECT r.device_id, r.metric,
           sum(CASE
               WHEN r.minute > %(first)s AND r.minute < %(last)s
                   THEN coalesce(r.inc_within, 0) + coalesce(r.inc_from_prev, 0)
               WHEN r.first_ts > %(start)s AND r.first_ts <= %(end)s
                   THEN coalesce(r.inc_from_prev, 0)
               ELSE 0
           END) AS increase
    FROM keys k
    JOIN readings_1m r ON r.device_id = k.device_id AND r.metric = k.metric
    WHERE r.minute >= %(first)s AND r.minute <= %(last)s
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
        WHERE r.ts >= %(last)s AND r.ts <= %(end)s AND %(last)s > %(first)s
    ) e
    WHERE ts > %(start)s AND ts <= %(end)s AND previous IS NOT NULL
    GROUP BY device_id, metric
), raw AS (
    SELECT device_id, metric, coalesce(sum(counter_step(previous, value)), 0) AS increase
    FROM (
        SELECT u.device_id, u.metric, r.ts, r.value,
               lag(r.value) OVER (PARTITION BY u.device_id, u.metric ORDER BY r.ts) AS previous
        FROM unfolded u
        CROSS JOIN LATERAL (
            (SELECT b.ts, b.value FROM readings b
             WHERE b.device_id = u.device_id AND b.metric = u.metric AND b.ts <= %(start)s
             ORDER BY b.ts DESC LIMIT 1)
            UNION ALL
            (SELECT w.ts, w.value FROM readings w
             WHERE w.device_id = u.device_id AND w.metric = u.metric
               AND w.ts > %(start)s AND w.ts <= %(end)s)
        ) r
    ) s
    WHERE ts > %(start)s
    GROUP BY device_id, metric
)
SELECT coalesce(a.device_id, b.device_id) AS device_id, coalesce(a.metric, b.metric) AS metric,
       coalesce(a.increase, 0) + coalesce(b.increase, 0) AS increase
FROM minutes a
FULL JOIN edges b ON a.device_id = b.device_id AND a.metric = b.metric
UNION ALL
SELECT device_id, metric, increase FROM raw
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
            planned=factory_times(park.calendars, as_of=as_of, window_s=window_s),
        )
        for park in parks
    ]
