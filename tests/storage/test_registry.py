"""The one registry reader: the stored registry is the core registry of the loaded fleet."""

from __future__ import annotations

import asyncio

import psycopg

from schemas.fleet import parse_fleet
from services.core.registry import Registry, registry_from_fleet
from services.storage.fleet_store import load_fleet
from services.storage.registry import RegistryCache, read_registry

FLEET = """
device_types:
  - id: chiller
    metrics:
      state: {kind: state, states: [cooling, idle, fault, defrost], alarm_states: [defrost]}
      supply_temp_c: {kind: gauge, unit: degC, min: -20, max: 40, alarm: {max: 12}}
parks:
  - id: p2
    name: Second
    city: Anyang
    timezone: Europe/Berlin
    calendar: {shifts: [{days: [mon, tue], start: "22:00", end: "06:00"}], holidays: ["2026-12-25"]}
    factories:
      - id: g2
        name: Night Works
        industry: chemicals
        devices:
          - {id: c1, type: chiller}
      - id: g1
        calendar: {shifts: [{days: [sat], start: "08:00", end: "12:00"}]}
        devices:
          - {id: z9, type: production_line, capacity_units_per_hour: 50}
          - {id: a1, type: env_sensor, thresholds: {temp_c: {min: 5}}}
  - id: p1
    name: First
    city: Hebi
    factories:
      - id: f1
        name: Precision Parts
        devices:
          - {id: m1, type: power_meter}
"""


def test_stored_registry_is_the_core_registry_of_the_loaded_fleet(clean_db: str) -> None:
    """Devices, rules with overrides, parks, calendars and names read back as the core builds."""
    fleet = parse_fleet(FLEET)
    counts = load_fleet(clean_db, fleet)

    async def read() -> Registry:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            return await read_registry(conn)

    stored = asyncio.run(read())
    assert stored == registry_from_fleet(fleet, counts.version)
    assert list(stored.parks) == ["p1", "p2"]
    assert [d.device_id for d in stored.parks["p2"].devices] == ["a1", "c1", "z9"]
    assert stored.devices["a1"].metrics["temp_c"].alarm_min == 5
    assert stored.devices["a1"].metrics["temp_c"].alarm_max is None
    assert stored.parks["p2"].calendars["g1"] != stored.parks["p2"].calendars["g2"]
    assert stored.parks["p2"].factories["g2"].industry == "chemicals"
    assert [p.park_id for p in stored.city("ANYANG")] == ["p2"]


def test_registry_cache_reads_again_only_after_a_fleet_load(clean_db: str) -> None:
    """The cache keeps its registry while no load comes, and follows a load at once."""
    fleet = parse_fleet(FLEET)
    load_fleet(clean_db, fleet)
    cache = RegistryCache()

    async def current() -> Registry:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            return await cache.current(conn)

    first = asyncio.run(current())
    assert asyncio.run(current()) is first
    smaller = parse_fleet(FLEET.split("  - id: p1", maxsplit=1)[0])
    counts = load_fleet(clean_db, smaller)
    moved = asyncio.run(current())
    assert moved.version == counts.version
    assert list(moved.parks) == ["p2"]
