"""The benchmark's park in the registry: added to the loaded fleet, and taken out again."""

from __future__ import annotations

import psycopg

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

BENCH_PARK = "bench-park"
DEVICE_PREFIX = "bench-d"
DEVICES_PER_FACTORY = 100
DEVICE_TYPE = "env_sensor"


def bench_park(devices: int) -> Park:
    """Return the benchmark's park: ``devices`` env sensors in factories of 100."""
    factories = []
    for start in range(0, devices, DEVICES_PER_FACTORY):
        factory_id = f"bench-f{start // DEVICES_PER_FACTORY + 1:03d}"
        ids = range(start + 1, min(devices, start + DEVICES_PER_FACTORY) + 1)
        factories.append(
            Factory(
                id=factory_id,
                name=f"Benchmark factory {start // DEVICES_PER_FACTORY + 1}",
                industry="benchmark",
                devices=[Device(id=f"{DEVICE_PREFIX}{n:06d}", type=DEVICE_TYPE) for n in ids],
            )
        )
    return Park(id=BENCH_PARK, name="Benchmark park", city="Localhost", factories=factories)


def read_current_fleet(conn: psycopg.Connection) -> Fleet:
    """Read the registry back as a fleet, so that the benchmark can add to it and restore it."""
    builtin = {t.id for t in builtin_device_types()}
    types: dict[str, DeviceType] = {}
    rows = conn.execute(
        "SELECT t.type_id, t.description, t.attributes, m.metric, m.kind, m.unit, m.min_value,"
        " m.max_value, m.alarm_min, m.alarm_max, m.states, m.alarm_states"
        " FROM device_types t JOIN device_type_metrics m USING (type_id)"
        " WHERE t.type_id <> ALL(%s) ORDER BY t.type_id, m.metric",
        (sorted(builtin),),
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
        types[type_id] = DeviceType(
            id=type_id, description=description, metrics=specs[type_id], attributes=attributes
        )
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
    for factory_id, park_id, name, industry in conn.execute(
        "SELECT factory_id, park_id, name, industry FROM factories ORDER BY factory_id"
    ):
        factories.setdefault(park_id, []).append(
            Factory(
                id=factory_id, name=name, industry=industry, devices=devices.get(factory_id, [])
            )
        )
    parks = [
        Park(id=park_id, name=name, city=city, factories=factories.get(park_id, []))
        for park_id, name, city in conn.execute(
            "SELECT park_id, name, city FROM parks ORDER BY park_id"
        )
    ]
    return Fleet(device_types=list(types.values()), parks=parks)


def without_bench_park(fleet: Fleet) -> Fleet:
    """Return ``fleet`` without the benchmark's park (left over from an interrupted run)."""
    return fleet.model_copy(update={"parks": [p for p in fleet.parks if p.id != BENCH_PARK]})
