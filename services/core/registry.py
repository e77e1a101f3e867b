"""The device registry as ingest sees it: each device's place and the rules for its metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.fleet import DeviceType, Fleet, MetricKind, MetricSpec, Thresholds


@dataclass(frozen=True, slots=True)
class MetricRule:
    """How one metric of one device is judged: kind, valid range, states and alarm bounds."""

    kind: MetricKind
    min_value: float | None = None
    max_value: float | None = None
    alarm_min: float | None = None
    alarm_max: float | None = None
    states: frozenset[str] = frozenset()
    alarm_states: frozenset[str] = frozenset()

    def within(self, value: float) -> bool:
        """Return whether a value lies in the valid range (outside it a reading is refused)."""
        return (self.min_value is None or value >= self.min_value) and (
            self.max_value is None or value <= self.max_value
        )

    def in_alarm(self, value: float | None, text: str | None) -> bool:
        """Return whether a stored value puts its device in alarm."""
        if self.kind is MetricKind.STATE:
            return text is not None and text in self.alarm_states
        if value is None:
            return False
        too_low = self.alarm_min is not None and value < self.alarm_min
        too_high = self.alarm_max is not None and value > self.alarm_max
        return too_low or too_high


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A registered device: where it is and how its metrics are judged."""

    device_id: str
    park_id: str
    factory_id: str
    type_id: str
    metrics: Mapping[str, MetricRule]
    capacity_units_per_hour: float | None = None


@dataclass(frozen=True, slots=True)
class Registry:
    """A snapshot of the fleet at one fleet version."""

    devices: Mapping[str, DeviceEntry] = field(default_factory=dict)
    version: int = 0


def metric_rule(spec: MetricSpec, override: Thresholds | None = None) -> MetricRule:
    """Build the rule for one metric, with a device's own alarm thresholds when it has them."""
    alarm = override if override is not None else spec.alarm
    return MetricRule(
        kind=spec.kind,
        min_value=spec.min,
        max_value=spec.max,
        alarm_min=alarm.min if alarm else None,
        alarm_max=alarm.max if alarm else None,
        states=frozenset(spec.states or ()),
        alarm_states=frozenset(spec.alarm_states or ()),
    )


def type_rules(
    dtype: DeviceType, overrides: Mapping[str, Thresholds] | None = None
) -> dict[str, MetricRule]:
    """Return the metric rules of a device type, with per-device threshold overrides."""
    overrides = overrides or {}
    return {name: metric_rule(spec, overrides.get(name)) for name, spec in dtype.metrics.items()}


def registry_from_fleet(fleet: Fleet, version: int = 0) -> Registry:
    """Build a registry snapshot from a validated fleet."""
    types = fleet.all_device_types()
    devices: dict[str, DeviceEntry] = {}
    for park in fleet.parks:
        for factory in park.factories:
            for device in factory.devices:
                devices[device.id] = DeviceEntry(
                    device_id=device.id,
                    park_id=park.id,
                    factory_id=factory.id,
                    type_id=device.type,
                    metrics=type_rules(types[device.type], device.thresholds),
                    capacity_units_per_hour=device.capacity_units_per_hour,
                )
    return Registry(devices=devices, version=version)
