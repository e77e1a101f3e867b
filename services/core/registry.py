"""The device registry: each device's place, the rules for its metrics, and the parks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.fleet import DEFAULT_TIMEZONE, DeviceType, Fleet, MetricKind, MetricSpec, Thresholds
from services.core.calendar import WorkCalendar, calendar_in_force, work_calendar


@dataclass(frozen=True, slots=True)
class MetricRule:
    """How one metric of one device is judged: kind, valid range, states and alarm bounds."""

    kind: MetricKind
    unit: str = ""
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
class FactoryInfo:
    """A factory's display name and industry."""

    name: str
    industry: str


@dataclass(frozen=True, slots=True)
class ParkInfo:
    """A park and its registered devices, with the rules their signals are judged by.

    ``calendars`` holds, per factory, the calendar in force (its own or the park's, in the
    park's time zone); a factory without one is always scheduled. ``factories`` names
    every factory of the park, in id order.
    """

    park_id: str
    name: str
    city: str
    devices: tuple[DeviceEntry, ...]
    timezone: str = DEFAULT_TIMEZONE
    calendars: Mapping[str, WorkCalendar | None] = field(default_factory=dict)
    factories: Mapping[str, FactoryInfo] = field(default_factory=dict)

    @property
    def planned(self) -> bool:
        """Whether any factory of the park follows a calendar."""
        return any(c is not None for c in self.calendars.values())


@dataclass(frozen=True, slots=True)
class Registry:
    """A snapshot of the fleet at one fleet version: devices by id and parks by id."""

    devices: Mapping[str, DeviceEntry] = field(default_factory=dict)
    version: int = 0
    parks: Mapping[str, ParkInfo] = field(default_factory=dict)

    def park(self, park_id: str) -> ParkInfo | None:
        """Return a park with its devices, or None when it is not registered."""
        return self.parks.get(park_id)

    def city(self, city: str) -> list[ParkInfo]:
        """Return the parks of a city (matched without regard to case), in park id order."""
        wanted = city.casefold()
        return [p for p in self.parks.values() if p.city.casefold() == wanted]


def metric_rule(spec: MetricSpec, override: Thresholds | None = None) -> MetricRule:
    """Build the rule for one metric, with a device's own alarm thresholds when it has them."""
    alarm = override if override is not None else spec.alarm
    return MetricRule(
        kind=spec.kind,
        unit=spec.unit,
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
    """Build a registry snapshot from a validated fleet (parks in id order, devices too)."""
    types = fleet.all_device_types()
    devices: dict[str, DeviceEntry] = {}
    parks: dict[str, ParkInfo] = {}
    for park in sorted(fleet.parks, key=lambda p: p.id):
        members: list[DeviceEntry] = []
        calendars: dict[str, WorkCalendar | None] = {}
        factories: dict[str, FactoryInfo] = {}
        for factory in sorted(park.factories, key=lambda f: f.id):
            factories[factory.id] = FactoryInfo(factory.name, factory.industry)
            found = calendar_in_force(park.calendar, factory.calendar)
            calendars[factory.id] = work_calendar(found, park.timezone)
            for device in factory.devices:
                entry = DeviceEntry(
                    device_id=device.id,
                    park_id=park.id,
                    factory_id=factory.id,
                    type_id=device.type,
                    metrics=type_rules(types[device.type], device.thresholds),
                    capacity_units_per_hour=device.capacity_units_per_hour,
                )
                devices[device.id] = entry
                members.append(entry)
        parks[park.id] = ParkInfo(
            park_id=park.id,
            name=park.name,
            city=park.city,
            devices=tuple(sorted(members, key=lambda d: d.device_id)),
            timezone=park.timezone,
            calendars=calendars,
            factories=factories,
        )
    return Registry(devices=devices, version=version, parks=parks)
