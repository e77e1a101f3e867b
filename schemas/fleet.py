"""The fleet file (device registry) and device types (thing models), as loaded by ``fleet load``."""

from __future__ import annotations

import math
import re
from datetime import date
from enum import StrEnum
from importlib import resources
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.fleet_text import FleetLimits, load_fleet_text
from schemas.telemetry import ID_PATTERN

Id = Annotated[str, Field(pattern=ID_PATTERN)]
# A park's or factory's Chinese name, shown by the dashboard in Chinese ("" falls back to name).
NameZh = Annotated[str, Field(max_length=200, description="Chinese name (中文名称)")]

DEFAULT_TIMEZONE = "Asia/Shanghai"
# The days a shift may start on, Monday first (datetime.weekday() is the index).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
# IANA names are short (the longest is 32 characters); a longer one is refused unread.
_MAX_TIMEZONE_CHARS = 64
# Bounds on one calendar: a week of three shifts a day, and decades of holidays.
MAX_SHIFTS = 21
MAX_HOLIDAYS = 1000


class MetricKind(StrEnum):
    """How a metric behaves over time."""

    GAUGE = "gauge"
    COUNTER = "counter"
    STATE = "state"


class Thresholds(BaseModel):
    """Alarm thresholds: a reading outside them is stored and puts its device in alarm."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None


class MetricSpec(BaseModel):
    """One metric of a device type: its kind, unit, valid range and alarm thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MetricKind
    unit: str = ""
    min: float | None = Field(default=None, description="readings below are refused")
    max: float | None = Field(default=None, description="readings above are refused")
    alarm: Thresholds | None = None
    states: list[str] | None = Field(default=None, description="allowed values of a state metric")
    alarm_states: list[str] | None = Field(
        default=None, description="state values that put the device in alarm"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind is MetricKind.STATE and not self.states:
            raise ValueError("a state metric lists its states")
        if self.kind is not MetricKind.STATE and self.states:
            raise ValueError("only a state metric has states")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("range bounds are finite numbers")
        return self


class DeviceType(BaseModel):
    """A thing model: the metrics a device of this type may publish."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    description: str = ""
    metrics: dict[str, MetricSpec] = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list, description="required device attributes")


class Device(BaseModel):
    """A registered device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    type: Id
    capacity_units_per_hour: float | None = Field(default=None, gt=0)
    thresholds: dict[str, Thresholds] = Field(default_factory=dict)


class Shift(BaseModel):
    """A shift: the weekdays it starts on and its wall-clock start and end.

    An ``end`` at or before ``start`` means the shift runs past midnight into the next day.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: list[str] = Field(min_length=1, max_length=len(WEEKDAYS))
    start: str = Field(description="HH:MM, 24-hour wall clock in the park's time zone")
    end: str = Field(description="HH:MM; at or before start: the next day")

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        for day in days:
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}; use {', '.join(WEEKDAYS)}")
        if len(set(days)) != len(days):
            raise ValueError("a weekday is listed twice")
        return days

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted_time(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 14:00 as the base-60 number 840.
            raise ValueError(  # noqa: TRY004 - a validation message, not a type error
                f"write times in quotes, e.g. '14:00' (unquoted, YAML reads it as {value})"
            )
        return value

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _CLOCK_TIME.fullmatch(value):
            raise ValueError(f"{value!r} is not a time HH:MM (00:00 to 23:59)")
        return value


class Calendar(BaseModel):
    """When a factory is scheduled to run: its shifts, and holidays on which none starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shifts: list[Shift] = Field(default_factory=list, max_length=MAX_SHIFTS)
    holidays: list[date] = Field(default_factory=list, max_length=MAX_HOLIDAYS)


class Factory(BaseModel):
    """A factory (enterprise) inside a park."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    name: str = ""
    name_zh: NameZh = ""
    industry: str = ""
    calendar: Calendar | None = Field(default=None, description="replaces the park's calendar")
    devices: list[Device] = Field(default_factory=list)


class Park(BaseModel):
    """An industrial park."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    name: str = ""
    name_zh: NameZh = ""
    city: str = ""
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA time zone of the calendars")
    calendar: Calendar | None = Field(
        default=None, description="the factories' calendar unless a factory has its own"
    )
    factories: list[Factory] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        if len(name) > _MAX_TIMEZONE_CHARS:
            raise ValueError(f"time zone name longer than {_MAX_TIMEZONE_CHARS} characters")
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {name!r}; use an IANA name such as Asia/Shanghai"
            ) from exc
        return name


class Fleet(BaseModel):
    """The whole registry: parks, their factories and devices, and any extra device types."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_types: list[DeviceType] = Field(default_factory=list)
    parks: list[Park] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        types = {t.id: t for t in builtin_device_types()} | {t.id: t for t in self.device_types}
        seen: dict[str, set[str]] = {"park": set(), "factory": set(), "device": set()}

        def unique(kind: str, ident: str) -> None:
            if ident in seen[kind]:
                raise ValueError(f"duplicate {kind} id {ident!r}")
            seen[kind].add(ident)

        for park in self.parks:
            unique("park", park.id)
            for factory in park.factories:
                unique("factory", factory.id)
                for device in factory.devices:
                    unique("device", device.id)
                    _check_device(device, types)
        return self

    def all_device_types(self) -> dict[str, DeviceType]:
        """Return built-in device types overlaid with the fleet's own."""
        return {t.id: t for t in builtin_device_types()} | {t.id: t for t in self.device_types}


def _check_device(device: Device, types: dict[str, DeviceType]) -> None:
    dtype = types.get(device.type)
    if dtype is None:
        raise ValueError(f"device {device.id!r} has unknown type {device.type!r}")
    if "capacity_units_per_hour" in dtype.attributes and device.capacity_units_per_hour is None:
        raise ValueError(f"device {device.id!r} of type {dtype.id} needs capacity_units_per_hour")
    for metric in device.thresholds:
        if metric not in dtype.metrics:
            raise ValueError(f"device {device.id!r}: threshold for unknown metric {metric!r}")


def builtin_device_types() -> list[DeviceType]:
    """Return the device types that ship in ``schemas/device_types.yaml``."""
    text = resources.files("schemas").joinpath("device_types.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return [DeviceType.model_validate(item) for item in raw["device_types"]]


def parse_fleet(text: str | bytes, limits: FleetLimits | None = None) -> Fleet:
    """Parse a fleet file (YAML, which also accepts JSON) into a validated ``Fleet``.

    The text is read by ``schemas.fleet_text`` (no aliases, bounded size, nodes and depth).

    Raises:
        ValueError: the text is not YAML, is over ``limits`` (``FleetTextError``), or does
            not describe a valid fleet (``pydantic.ValidationError``).
    """
    raw = load_fleet_text(text, limits)
    if not isinstance(raw, dict):
        raise ValueError("fleet file must be a mapping with a 'parks' list")  # noqa: TRY004 - bad input, not a bad type
    return Fleet.model_validate(raw)
