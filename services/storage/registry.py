"""The one registry reader: the registry tables as the core ``Registry``, and its version.

Ingest, the API and the maintenance process all judge and count against this snapshot;
the fleet export (``fleet_store.read_fleet``) reads the same rows into a ``Fleet``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from schemas.fleet import (
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
from services.core.registry import Registry, registry_from_fleet

# The rows of the registry, each statement in the order fleet_from_rows takes them.
TYPES_SQL = (
    "SELECT t.type_id, t.description, t.attributes, m.metric, m.kind, m.unit, m.min_value,"
    " m.max_value, m.alarm_min, m.alarm_max, m.states, m.alarm_states"
    " FROM device_types t JOIN device_type_metrics m USING (type_id)"
    " ORDER BY t.type_id, m.metric"
)
DEVICES_SQL = (
    "SELECT device_id, factory_id, type_id, capacity_units_per_hour, thresholds"
    " FROM devices ORDER BY device_id"
)
FACTORIES_SQL = (
    "SELECT factory_id, park_id, name, name_zh, industry, calendar"
    " FROM factories ORDER BY factory_id"
)
PARKS_SQL = "SELECT park_id, name, name_zh, city, timezone, calendar FROM parks ORDER BY park_id"
# The fleet version in force; an index-only scan (~0.1 ms), read before every ingest flush.
VERSION_SQL = "SELECT coalesce(max(version), 0) FROM fleet_versions"

Rows = Iterable[Sequence[Any]]


def fleet_from_rows(types: Rows, devices: Rows, factories: Rows, parks: Rows) -> Fleet:
    """Build the fleet from the rows of the four statements above, in their order.

    A device type is part of the fleet when it is not built in, or when the stored one
    differs from the built-in one of its id (the fleet replaced it).
    """
    builtin = {t.id: t for t in builtin_device_types()}
    specs: dict[str, dict[str, MetricSpec]] = {}
    heads: dict[str, tuple[str, list[str]]] = {}
    for type_id, description, attributes, metric, kind, unit, lo, hi, amin, amax, st, ast in types:
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
    own_types: list[DeviceType] = []
    for type_id, (description, attributes) in heads.items():
        stored = DeviceType(
            id=type_id, description=description, metrics=specs[type_id], attributes=attributes
        )
        if stored != builtin.get(type_id):
            own_types.append(stored)
    by_factory: dict[str, list[Device]] = {}
    for device_id, factory_id, type_id, capacity, thresholds in devices:
        by_factory.setdefault(factory_id, []).append(
            Device(
                id=device_id,
                type=type_id,
                capacity_units_per_hour=capacity,
                thresholds=thresholds or {},
            )
        )
    by_park: dict[str, list[Factory]] = {}
    for factory_id, park_id, name, name_zh, industry, calendar in factories:
        by_park.setdefault(park_id, []).append(
            Factory(
                id=factory_id,
                name=name,
                name_zh=name_zh,
                industry=industry,
                calendar=calendar,
                devices=by_factory.get(factory_id, []),
            )
        )
    return Fleet(
        device_types=own_types,
        parks=[
            Park(
                id=park_id,
                name=name,
                name_zh=name_zh,
                city=city,
                timezone=timezone,
                calendar=calendar,
                factories=by_park.get(park_id, []),
            )
            for park_id, name, name_zh, city, timezone, calendar in parks
        ],
    )


async def fleet_version(conn: AsyncConnection) -> int:
    """Return the fleet version in force (0 before the first fleet load)."""
    cur = await conn.execute(VERSION_SQL)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def read_registry(conn: AsyncConnection) -> Registry:
    """Read the registry snapshot at the fleet version in force.

    Run it in a repeatable-read transaction where a fleet load may commit meanwhile and a
    mix of two fleets would matter (ingest does).
    """
    version = await fleet_version(conn)
    rows = []
    for sql in (TYPES_SQL, DEVICES_SQL, FACTORIES_SQL, PARKS_SQL):
        cur = await conn.execute(sql)
        rows.append(await cur.fetchall())
    return registry_from_fleet(fleet_from_rows(*rows), version)


# The newest fleet load; its time tells a reloaded database (versions from 1 again) apart.
_NEWEST_LOAD_SQL = "SELECT version, loaded_at FROM fleet_versions ORDER BY version DESC LIMIT 1"


class RegistryCache:
    """The registry of one process (one database), read again only when a fleet load moved it."""

    def __init__(self) -> None:
        """Start empty: the first ``current`` reads the registry."""
        self._registry: Registry | None = None
        self._load: tuple[Any, ...] | None = None

    async def current(self, conn: AsyncConnection) -> Registry:
        """Return the registry in force (one indexed read when no fleet load came since)."""
        cur = await conn.execute(_NEWEST_LOAD_SQL)
        row = await cur.fetchone()
        load = tuple(row) if row is not None else None
        if self._registry is None or load is None or load != self._load:
            # Without a load (parks written directly) there is nothing to key on: read.
            self._registry = await read_registry(conn)
            self._load = load
        return self._registry
