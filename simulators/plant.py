"""A factory's devices simulated together: its lines and machines drive power and PM2.5."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from schemas.fleet import DeviceType, Factory, MetricKind
from services.core.calendar import WorkCalendar
from simulators.models import (
    DEFAULT_RESTART_RATE_PER_H,
    CalendarShift,
    EnvSensorModel,
    MachineModel,
    Metrics,
    PowerMeterModel,
    ProductionLineModel,
    Shift,
    hall_temperature_c,
    shift_plan_for,
)

# Rated electrical load: a line draws a fixed part plus one proportional to its capacity,
# a machine a fixed amount; the meters of a factory split the total between them.
_LINE_FIXED_KW = 25.0
_LINE_KW_PER_UNIT_PER_H = 0.02
_MACHINE_KW = 11.0
_SITE_KW = 20.0  # lighting, HVAC, compressors: drawn whether or not anything runs


@dataclass(frozen=True, slots=True)
class DeviceSample:
    """The metrics of one device at one time, with the ids that place it in the fleet."""

    park_id: str
    factory_id: str
    device_id: str
    metrics: Metrics


def factory_rng(seed: int, factory_id: str) -> random.Random:
    """Return the RNG of one factory: independent of other factories, stable across runs."""
    return random.Random(f"{seed}/{factory_id}")


def factory_seed(seed: int, factory_id: str) -> int:
    """Return an integer seed for one factory's other random choices (outages, bad data)."""
    return factory_rng(seed, factory_id).getrandbits(32)


class FactorySimulator:
    """Simulates every device of one factory at a common sampling time.

    Lines and machines step first; their load drives the power meters (power and energy)
    and the environment sensors (heat and dust), so a factory's power follows its
    production. Devices of types without a model (a fleet's own device types) are listed
    in ``skipped`` and produce nothing.
    """

    def __init__(
        self,
        park_id: str,
        factory: Factory,
        device_types: Mapping[str, DeviceType],
        calendar: WorkCalendar | None = None,
        /,
        *,
        restart_rate_per_h: float = DEFAULT_RESTART_RATE_PER_H,
        episode_rate_per_h: float = 1 / 72,
        bad_data_rate: float = 0.0,
    ) -> None:
        """Build the device models of ``factory``.

        Args:
            park_id: the park the factory belongs to.
            factory: the factory and its devices, as in the fleet file.
            device_types: device types by id, to keep values inside their valid ranges.
            calendar: the factory's calendar in force (``services.core.calendar``): its
                lines and machines run on its shifts and stop off them, so the meters fall
                to the site's base load. Without one, a shift plan by industry.
            restart_rate_per_h: how often a line reboots and its output counter restarts.
            episode_rate_per_h: how often an environment sensor sees a bad spell.
            bad_data_rate: share of samples deliberately corrupted (out of range, unknown
                metric, wrong kind), to exercise the ingest's dead letters; 0 for none.
        """
        if not 0.0 <= bad_data_rate <= 1.0:
            raise ValueError("bad_data_rate must be within [0, 1]")
        self.park_id = park_id
        self.factory_id = factory.id
        self.shift: Shift = (
            CalendarShift(calendar)
            if calendar is not None
            else shift_plan_for(factory.id, factory.industry)
        )
        self.bad_data_rate = bad_data_rate
        self.skipped: list[str] = []
        self._types = dict(device_types)
        self._order: list[tuple[str, str]] = []
        self.lines: dict[str, ProductionLineModel] = {}
        self.machines: dict[str, MachineModel] = {}
        self.meters: dict[str, PowerMeterModel] = {}
        self.sensors: dict[str, EnvSensorModel] = {}
        for device in factory.devices:
            if device.type == "production_line" and device.capacity_units_per_hour:
                self.lines[device.id] = ProductionLineModel(
                    device.capacity_units_per_hour, self.shift, restart_rate_per_h
                )
            elif device.type == "machine":
                self.machines[device.id] = MachineModel(self.shift)
            elif device.type == "power_meter":
                self.meters[device.id] = PowerMeterModel(rated_kw=0.0)
            elif device.type == "env_sensor":
                self.sensors[device.id] = EnvSensorModel(self.shift, episode_rate_per_h)
            else:
                self.skipped.append(device.id)
                continue
            self._order.append((device.id, device.type))
        self._rated_kw = self._line_kw() + _MACHINE_KW * len(self.machines) + _SITE_KW
        # Feeders differ in size: split the load by a stable hash of each meter's id.
        weights = {m: 1.0 + zlib.crc32(m.encode()) % 100 / 100 for m in self.meters}
        for meter_id, meter in self.meters.items():
            meter.rated_kw = self._rated_kw * weights[meter_id] / sum(weights.values())
            meter.base_share = _SITE_KW / self._rated_kw

    def _line_kw(self) -> float:
        return sum(
            _LINE_FIXED_KW + _LINE_KW_PER_UNIT_PER_H * line.capacity_units_per_hour
            for line in self.lines.values()
        )

    @property
    def device_ids(self) -> list[str]:
        """Return the ids of the simulated devices, in fleet order."""
        return [device_id for device_id, _ in self._order]

    def load(self) -> float:
        """Return the factory's electrical load as a share of its production load, in [0, 1]."""
        production_kw = self._rated_kw - _SITE_KW
        if production_kw <= 0:
            return 0.0
        line_kw = sum(
            (_LINE_FIXED_KW + _LINE_KW_PER_UNIT_PER_H * line.capacity_units_per_hour) * line.load
            for line in self.lines.values()
        )
        machine_kw = sum(_MACHINE_KW * machine.load for machine in self.machines.values())
        return min(1.0, (line_kw + machine_kw) / production_kw)

    def step(self, ts: datetime, rng: random.Random) -> list[DeviceSample]:
        """Advance every device to ``ts`` and return one sample per device, in fleet order."""
        metrics: dict[str, Metrics] = {}
        ambient_c = hall_temperature_c(ts, self.shift)
        for device_id, line in self.lines.items():
            metrics[device_id] = line.step(ts, rng)
        for device_id, machine in self.machines.items():
            metrics[device_id] = machine.step(ts, rng, ambient_c)
        load = self.load()
        for device_id, meter in self.meters.items():
            metrics[device_id] = meter.step(ts, rng, load)
        for device_id, sensor in self.sensors.items():
            metrics[device_id] = sensor.step(ts, rng, load)
        samples = []
        for device_id, type_id in self._order:
            values = clamp_to_range(metrics[device_id], self._types.get(type_id))
            if self.bad_data_rate and rng.random() < self.bad_data_rate:
                values = corrupt_metrics(values, self._types.get(type_id), rng)
            samples.append(DeviceSample(self.park_id, self.factory_id, device_id, values))
        return samples


def clamp_to_range(metrics: Metrics, device_type: DeviceType | None) -> Metrics:
    """Return ``metrics`` with every number inside its metric's valid range."""
    if device_type is None:
        return metrics
    result = dict(metrics)
    for name, value in metrics.items():
        spec = device_type.metrics.get(name)
        if spec is None or isinstance(value, str):
            continue
        if spec.min is not None and value < spec.min:
            result[name] = type(value)(spec.min)
        elif spec.max is not None and value > spec.max:
            result[name] = type(value)(spec.max)
    return result


def corrupt_metrics(
    metrics: Metrics, device_type: DeviceType | None, rng: random.Random
) -> Metrics:
    """Return ``metrics`` with one deliberate defect the ingest must refuse, chosen at random.

    The defects: a value outside its valid range, a metric the type does not have, a value of
    the wrong kind (text for a number, a number for a state) and a state the type does not list.
    """
    result = dict(metrics)
    name = rng.choice(sorted(result))
    spec = device_type.metrics.get(name) if device_type else None
    defect = rng.choice(("out_of_range", "unknown_metric", "wrong_kind"))
    if spec is not None and spec.kind is MetricKind.STATE:
        result[name] = "on-fire" if defect == "out_of_range" else 3
    elif defect == "out_of_range" and spec is not None and spec.max is not None:
        result[name] = spec.max * 2 + 1
    elif defect == "out_of_range" and spec is not None and spec.min is not None:
        result[name] = spec.min - 1
    elif defect == "wrong_kind":
        result[name] = "n/a"
    else:
        result["firmware_debug_flags"] = rng.randrange(256)
    return result
