"""Load a fleet file into the registry tables, and read the registry back for ingest."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import psycopg
from psycopg.rows import dict_row

from schemas.fleet import (
    Calendar,
    Device,
    DeviceType,
    Factory,
    Fleet,
    MetricKind,
    MetricSpec,
    Park,
    Thresholds,
    builtin_device_types,
)
from services.core.registry import DeviceEntry, MetricRule, Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """What a fleet load wrote."""

    version: int
    parks: int
    factories: int
    devices: int
    device_types: int


def load_fleet(conninfo: str, fleet: Fleet) -> FleetCounts:
    """Replace the registry with ``fleet`` in one transaction (readings are kept).

    Parks, factories and devices absent from the file are removed from the registry; their
    stored readings stay, so a device that comes back finds its history.
    """
    with psycopg.connect(conninfo) as conn:
        return load_fleet_on(conn, fleet)


def load_fleet_on(conn: psycopg.Connection, fleet: Fleet) -> FleetCounts:
    """Replace the registry on an open connection and commit."""
    types = fleet.all_device_types()
    parks = [
        (p.id, p.name, p.name_zh, p.city, p.timezone, _calendar_json(p.calendar))
        for p in fleet.parks
    ]
    factories = [
        (f.id, p.id, f.name, f.name_zh, f.industry, _calendar_json(f.calendar))
        for p in fleet.parks
        for f in p.factories
    ]
    devices = [
        (
            d.id,
            f.id,
            p.id,
            d.type,
            d.capacity_units_per_hour,
            orjson.dumps({m: t.model_dump() for m, t in d.thresholds.items()}).decode(),
        )
        for p in fleet.parks
        for f in p.factories
        for d in f.devices
    ]
    with conn.transaction(), conn.cursor() as cur:
        # One fleet load at a time; readers see the old or the new registry, never a mix.
        cur.execute("LOCK TABLE parks, factories, devices IN EXCLUSIVE MODE")
        for dtype in types.values():
            cur.execute(
                "INSERT INTO device_types (type_id, description, attributes) VALUES (%s, %s, %s)"
                " ON CONFLICT (type_id) DO UPDATE SET description = excluded.description,"
                " attributes = excluded.attributes",
                (dtype.id, dtype.description, dtype.attributes),
            )
            cur.execute("DELETE FROM device_type_metrics WHERE type_id = %s", (dtype.id,))
            cur.executemany(
                "INSERT INTO device_type_metrics (type_id, metric, kind, unit, min_value,"
                " max_value, alarm_min, alarm_max, states, alarm_states)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        dtype.id,
                        name,
                        spec.kind.value,
                        spec.unit,
                        spec.min,
                        spec.max,
                        spec.alarm.min if spec.alarm else None,
                        spec.alarm.max if spec.alarm else None,
                        spec.states,
                        spec.alarm_states,
                    )
                    for name, spec in dtype.metrics.items()
                ],
            )
        cur.execute("DELETE FROM devices")
        cur.execute("DELETE FROM factories")
        cur.execute("DELETE FROM parks")
        cur.executemany(
            "INSERT INTO parks (park_id, name, name_zh, city, timezone, calendar)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
            parks,
        )
        cur.executemany(
            "INSERT INTO factories (factory_id, park_id, name, name_zh, industry, calendar)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
            factories,
        )
        cur.executemany(
            "INSERT INTO devices (device_id, factory_id, park_id, type_id,"
            " capacity_units_per_hour, thresholds) VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
            devices,
        )
        cur.execute(
            "INSERT INTO fleet_versions (parks, factories, devices) VALUES (%s, %s, %s)"
            " RETURNING version",
            (len(parks), len(factories), len(devices)),
        )
        row = cur.fetchone()
        if row is None:
            raise RuntimeError("fleet_versions insert returned no row")
        version = int(row[0])
    logger.info(
        "Loaded fleet version %d: %d parks, %d factories, %d devices",
        version,
        len(parks),
        len(factories),
        len(devices),
    )
    return FleetCounts(version, len(parks), len(factories), len(devices), len(types))


def read_fleet(conn: psycopg.Connection) -> Fleet:
    """Read the registry back as a fleet (custom device types and threshold overrides included).

    A device type is part of the fleet when it is not built in, or when the stored one
    differs from the built-in one of its id (the fleet replaced it).
    """
    builtin = {t.id: t for t in builtin_device_types()}
    types: dict[str, DeviceType] = {}
    rows = conn.execute(
        "SELECT t.type_id, t.description, t.attributes, m.metric, m.kind, m.unit, m.min_value,"
        " m.max_value, m.alarm_min, m.alarm_max, m.states, m.alarm_states"
        " FROM device_types t JOIN device_type_metrics m USING (type_id)"
        " ORDER BY t.type_id, m.metric"
    ).fetchall()
    specs: dict[str, dict[str, MetricSpec]] = {}
    heads: dict[str, tuple[str, list[str]]] = {}
    for type_id, description, attributes, metric, kind, unit, lo, hi, amin, amax, st, ast in rows:
        heads[type_id] = (description, list(attributes or []))
        alarm = None if amin is None and amax is None else Thresholds(min=amin, max=amax)
        specs.setdefault(type_id, {})[metric] = MetricSpec(
            kind=MetricKind(kind),
            unit=unit,
            min=lo,
            max=hi,
            alarm=alarm,
            states=st,
            alarm_states=ast,
        )
    for type_id, (description, attributes) in heads.items():
        stored = DeviceType(
            id=type_id, description=description, metrics=specs[type_id], attributes=attributes
        )
        if stored != builtin.get(type_id):
            types[type_id] = stored
    devices: dict[str, list[Device]] = {}
    for device_id, factory_id, type_id, capacity, thresholds in conn.execute(
        "SELECT device_id, factory_id, type_id, capacity_units_per_hour, thresholds"
        " FROM devices ORDER BY device_id"
    ):
        devices.setdefault(factory_id, []).append(
            Device(
                id=device_id,
                type=type_id,
                capacity_units_per_hour=capacity,
                thresholds=thresholds or {},
            )
        )
    factories: dict[str, list[Factory]] = {}
    for factory_id, park_id, name, name_zh, industry, calendar in conn.execute(
        "SELECT factory_id, park_id, name, name_zh, industry, calendar"
        " FROM factories ORDER BY factory_id"
    ):
        factories.setdefault(park_id, []).append(
            Factory(
                id=factory_id,
                name=name,
                name_zh=name_zh,
                industry=industry,
                calendar=calendar,
                devices=devices.get(factory_id, []),
            )
        )
    parks = [
        Park(
            id=park_id,
            name=name,
            name_zh=name_zh,
            city=city,
            timezone=timezone,
            calendar=calendar,
            factories=factories.get(park_id, []),
        )
        for park_id, name, name_zh, city, timezone, calendar in conn.execute(
            "SELECT park_id, name, name_zh, city, timezone, calendar FROM parks ORDER BY park_id"
        )
    ]
    return Fleet(device_types=list(types.values()), parks=parks)


def _calendar_json(calendar: Calendar | None) -> str | None:
    """A calendar as stored (jsonb), or None when there is none."""
    return None if calendar is None else calendar.model_dump_json()


_TYPE_METRICS_SQL = """
SELECT type_id, metric, kind, min_value, max_value, alarm_min, alarm_max, states, alarm_states
FROM device_type_metrics
"""

_DEVICES_SQL = """
SELECT d.device_id, d.park_id, d.factory_id, d.type_id, d.capacity_units_per_hour, d.thresholds
FROM devices d
"""


async def read_registry(conn: psycopg.AsyncConnection) -> Registry:
    """Read the registry snapshot ingest judges readings against."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT coalesce(max(version), 0) AS version FROM fleet_versions")
        version_row = await cur.fetchone()
        version = int(version_row["version"]) if version_row else 0
        await cur.execute(_TYPE_METRICS_SQL)
        rules: dict[str, dict[str, MetricRule]] = {}
        for row in await cur.fetchall():
            rules.setdefault(row["type_id"], {})[row["metric"]] = MetricRule(
                kind=MetricKind(row["kind"]),
                min_value=row["min_value"],
                max_value=row["max_value"],
                alarm_min=row["alarm_min"],
                alarm_max=row["alarm_max"],
                states=frozenset(row["states"] or ()),
                alarm_states=frozenset(row["alarm_states"] or ()),
            )
        await cur.execute(_DEVICES_SQL)
        devices: dict[str, DeviceEntry] = {}
        for row in await cur.fetchall():
            metrics = dict(rules.get(row["type_id"], {}))
            for metric, raw in (row["thresholds"] or {}).items():
                if metric in metrics:
                    override = Thresholds.model_validate(raw)
                    metrics[metric] = _with_alarm(metrics[metric], override)
            devices[row["device_id"]] = DeviceEntry(
                device_id=row["device_id"],
                park_id=row["park_id"],
                factory_id=row["factory_id"],
                type_id=row["type_id"],
                metrics=metrics,
                capacity_units_per_hour=row["capacity_units_per_hour"],
            )
    return Registry(devices=devices, version=version)


def _with_alarm(rule: MetricRule, override: Thresholds) -> MetricRule:
    return MetricRule(
        kind=rule.kind,
        min_value=rule.min_value,
        max_value=rule.max_value,
        alarm_min=override.min,
        alarm_max=override.max,
        states=rule.states,
        alarm_states=rule.alarm_states,
    )
