"""A small fleet shared by the core tests."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.fleet import parse_fleet
from services.core.registry import Registry, registry_from_fleet
from services.core.validate import Limits

FLEET_YAML = """
parks:
  - id: p1
    name: Park One
    city: Hebi
    factories:
      - id: f1
        devices:
          - {id: m1, type: power_meter}
          - {id: l1, type: production_line, capacity_units_per_hour: 1200}
          - {id: e1, type: env_sensor, thresholds: {temp_c: {min: 5, max: 35}}}
          - {id: x1, type: machine}
"""

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
LIMITS = Limits()


def registry() -> Registry:
    """Return the registry of the small fleet."""
    return registry_from_fleet(parse_fleet(FLEET_YAML), version=1)


def topic(device: str, channel: str = "telemetry", park: str = "p1", factory: str = "f1") -> str:
    """Return a v1 topic."""
    return f"parksense/v1/{park}/{factory}/{device}/{channel}"
