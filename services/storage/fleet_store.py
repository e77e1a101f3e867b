"""Load a fleet file into the registry tables, and read them back as a fleet (the export)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import psycopg

from schemas.fleet import Calendar, Fleet
from services.storage import registry
from services.storage.heartbeat import wait_for_subscriptions
from services.storage.registry import fleet_from_rows

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
    stored readings stay, so a device that comes back finds its history. When the load
    adds factories, it returns once the ingest workers that split the factories among
    themselves have subscribed to them (``heartbeat.wait_for_subscriptions``), so that the
    new factories' messages find a subscription as soon as it has returned.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = set(conn.execute("SELECT park_id, factory_id FROM factories").fetchall())
        counts = load_fleet_on(conn, fleet)
        if {(p.id, f.id) for p in fleet.parks for f in p.factories} - before:
            behind = wait_for_subscriptions(conn, counts.version)
            if behind:
                logger.warning(
                    "Fleet version %d: ingest workers %s have not subscribed to its new"
                    " factories yet; their first messages may go unseen",
                    counts.version,
                    ", ".join(behind),
                )
        return counts


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
    """Read the registry back as a fleet (custom device types and threshold overrides included)."""
    rows = [
        conn.execute(sql).fetchall()
        for sql in (
            registry.TYPES_SQL,
            registry.DEVICES_SQL,
            registry.FACTORIES_SQL,
            registry.PARKS_SQL,
        )
    ]
    return fleet_from_rows(*rows)


def _calendar_json(calendar: Calendar | None) -> str | None:
    """A calendar as stored (jsonb), or None when there is none."""
    return None if calendar is None else calendar.model_dump_json()


def registered_devices(conninfo: str) -> int:
    """How many devices the registry holds."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
    return int(row[0]) if row else 0
