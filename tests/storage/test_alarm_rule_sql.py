"""The roll-up fold's SQL and the core alarm rule agree on which devices are in alarm."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.core.alarms import MetricValue, can_alarm, metric_alarm
from services.core.readings import Reading
from services.core.registry import Registry
from services.storage.registry import read_registry
from tests.harness.storage import load, reading, rows, write

MINUTE = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

# Built-in types, a device override, and a custom type whose alarm states leave out
# ``fault`` (which still alarms, by PRODUCT.md's rule).
FLEET = """
device_types:
  - id: chiller
    metrics:
      state: {kind: state, states: [cooling, idle, fault, defrost], alarm_states: [defrost]}
      supply_temp_c: {kind: gauge, unit: degC, min: -20, max: 40, alarm: {max: 12}}
      energy_kwh: {kind: counter, unit: kWh, min: 0}
parks:
  - id: p1
    factories:
      - id: f1
        devices:
          - {id: l1, type: production_line, capacity_units_per_hour: 100}
          - {id: x1, type: machine}
          - {id: e1, type: env_sensor}
          - {id: e2, type: env_sensor, thresholds: {temp_c: {min: 5, max: 45}}}
          - {id: c1, type: chiller}
          - {id: m1, type: power_meter}
"""

# Each case: the readings of one minute, as (device, metric, value), oldest first.
CASES: dict[str, list[tuple[str, str, float | str]]] = {
    "line_fault": [("l1", "state", "running"), ("l1", "state", "fault")],
    "line_recovered": [("l1", "state", "fault"), ("l1", "state", "idle")],
    "vibration_above": [("x1", "state", "running"), ("x1", "vibration_mm_s", 7.2)],
    "vibration_at_bound": [("x1", "vibration_mm_s", 7.1), ("x1", "temp_c", 250)],
    "type_bound_overridden": [("e1", "temp_c", 42), ("e2", "temp_c", 42)],
    "override_bound_crossed": [("e1", "temp_c", 3), ("e2", "temp_c", 3)],
    "custom_alarm_state": [("c1", "state", "defrost"), ("c1", "supply_temp_c", 10)],
    "custom_fault": [("c1", "state", "fault"), ("m1", "power_kw", 5000)],
    "custom_gauge": [("c1", "state", "cooling"), ("c1", "supply_temp_c", 13)],
    "counters_never": [("c1", "energy_kwh", 10), ("m1", "energy_kwh", 1e9)],
    "humidity_below": [("e1", "humidity_pct", 9), ("e2", "pm25_ugm3", 80)],
}


def core_counts(registry: Registry, readings: list[Reading]) -> tuple[int, int]:
    """(devices that can alarm, devices in alarm) among those reporting, by the core rule."""
    latest: dict[tuple[str, str], Reading] = {}
    for r in readings:
        latest[(r.device_id, r.metric)] = r
    can, alarming = set(), set()
    for (device_id, metric), r in latest.items():
        device = registry.devices[device_id]
        rule = device.metrics[metric]
        if can_alarm(rule):
            can.add(device_id)
        value = MetricValue(ts=r.ts, value=r.value, text=r.text)
        if metric_alarm(device, metric, rule, value) is not None:
            alarming.add(device_id)
    return len(can), len(alarming)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fold_counts_the_devices_the_core_rule_puts_in_alarm(clean_db: str, case: str) -> None:
    """park_1m's alarm counts equal the core rule applied to each metric's last value."""
    load(clean_db, FLEET)
    readings = [
        reading(device, metric, MINUTE + timedelta(seconds=5 * i), value)
        for i, (device, metric, value) in enumerate(CASES[case])
    ]
    write(clean_db, readings)

    async def registry() -> Registry:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            return await read_registry(conn)

    [stored] = rows(
        clean_db,
        "SELECT alarm_devices_reporting, devices_in_alarm FROM park_1m"
        " WHERE park_id = 'p1' AND minute = %s",
        (MINUTE,),
    )
    expected = core_counts(asyncio.run(registry()), readings)
    assert (stored["alarm_devices_reporting"], stored["devices_in_alarm"]) == expected
