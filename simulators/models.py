"""Seeded signal models of the four device types; time and randomness come in as arguments."""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.core.calendar import WorkCalendar, is_scheduled

Metrics = dict[str, float | int | str]

# Parks are in China: shifts follow China Standard Time (UTC+8, no daylight saving).
CHINA_UTC_OFFSET_H = 8.0
# Industries whose plants run around the clock (furnaces and cell lines are not stopped nightly).
CONTINUOUS_INDUSTRIES = frozenset({"new-materials", "chemicals", "new-energy"})
# A device reboot (which resets its counters) about once a month.
DEFAULT_RESTART_RATE_PER_H = 1 / (30 * 24)
# Time constant of slowly varying noise: long enough that consecutive samples look continuous.
_NOISE_TAU_S = 900.0
# Machine temperature follows its load with this lag.
_THERMAL_TAU_S = 600.0
# ISO 10816 class II boundary of "unsatisfactory" vibration, the type's alarm threshold.
VIBRATION_ALARM_MM_S = 7.1


class State(StrEnum):
    """State of a production line or machine (the ``state`` metric)."""

    RUNNING = "running"
    IDLE = "idle"
    FAULT = "fault"
    STOPPED = "stopped"


# Transition rates (per hour) of the state machine of lines and machines, during a shift ...
_ON_SHIFT_RATES_PER_H: dict[State, dict[State, float]] = {
    State.RUNNING: {State.IDLE: 0.6, State.FAULT: 0.08, State.STOPPED: 0.03},
    State.IDLE: {State.RUNNING: 6.0, State.FAULT: 0.02, State.STOPPED: 0.2},
    State.FAULT: {State.RUNNING: 1.5, State.STOPPED: 0.3},  # a repair takes ~40 min
    State.STOPPED: {State.RUNNING: 4.0},  # start-up within ~15 min of the shift's start
}
# ... and outside it: everything winds down within ~10 min and stays stopped.
_OFF_SHIFT_RATES_PER_H: dict[State, dict[State, float]] = {
    State.RUNNING: {State.STOPPED: 6.0, State.IDLE: 1.0, State.FAULT: 0.02},
    State.IDLE: {State.STOPPED: 6.0},
    State.FAULT: {State.STOPPED: 1.0},
    State.STOPPED: {},
}


@dataclass(frozen=True, slots=True)
class ShiftPlan:
    """When a factory produces: a day shift in local time, or around the clock."""

    start_h: float = 8.0
    end_h: float = 20.0
    round_the_clock: bool = False
    utc_offset_h: float = CHINA_UTC_OFFSET_H

    def local_hour(self, ts: datetime) -> float:
        """Return the local hour of day, in [0, 24)."""
        local = ts + timedelta(hours=self.utc_offset_h)
        return local.hour + local.minute / 60 + local.second / 3600

    def on_shift(self, ts: datetime) -> bool:
        """Return whether the factory is meant to produce at ``ts``."""
        return self.round_the_clock or self.start_h <= self.local_hour(ts) < self.end_h


class CalendarShift:
    """When a factory produces by its calendar in the fleet (its own or its park's).

    Shifts start and end on whole minutes, so whether a minute is on shift is worked out
    once per minute and shared by every device of the factory.
    """

    def __init__(self, calendar: WorkCalendar) -> None:
        """Follow ``calendar``."""
        self.calendar = calendar
        self._minute: datetime | None = None
        self._on = False

    def local_hour(self, ts: datetime) -> float:
        """Return the hour of day in the park's time zone, in [0, 24)."""
        local = ts.astimezone(self.calendar.zone)
        return local.hour + local.minute / 60 + local.second / 3600

    def on_shift(self, ts: datetime) -> bool:
        """Return whether one of the calendar's shifts covers ``ts``."""
        minute = ts.replace(second=0, microsecond=0)
        if minute != self._minute:
            self._minute, self._on = minute, is_scheduled(self.calendar, minute)
        return self._on


# What the device models ask of a factory's working time.
Shift = ShiftPlan | CalendarShift


def shift_plan_for(factory_id: str, industry: str) -> ShiftPlan:
    """Return a factory's shift plan: continuous industries run 24 h, others a staggered day.

    The day shift starts between 07:30 and 08:30 and lasts 12 h, chosen by a stable hash of
    the factory id so that factories of a park do not all switch at the same second.
    """
    if industry in CONTINUOUS_INDUSTRIES:
        return ShiftPlan(round_the_clock=True)
    start_h = 7.5 + (zlib.crc32(factory_id.encode()) % 5) * 0.25
    return ShiftPlan(start_h=start_h, end_h=start_h + 12.0)


def hall_temperature_c(ts: datetime, shift: Shift) -> float:
    """Return a factory hall's temperature without load or noise: season and time of day.

    Henan has cold winters and hot summers; a heated, ventilated hall damps both to roughly
    13-25 °C.
    """
    season = -math.cos(2 * math.pi * (ts.timetuple().tm_yday - 20) / 365.0)  # -1 in January
    day = math.sin(2 * math.pi * (shift.local_hour(ts) - 9.0) / 24.0)  # +1 at 15:00 local
    return 19.0 + 6.0 * season + 2.5 * day


def _elapsed_s(last_ts: datetime | None, ts: datetime) -> float:
    if last_ts is None:
        return 0.0
    dt = (ts - last_ts).total_seconds()
    if dt < 0:
        raise ValueError(f"time went backwards: {ts.isoformat()} < {last_ts.isoformat()}")
    return dt


def happens(rate_per_h: float, dt_s: float, rng: random.Random) -> bool:
    """Return whether a Poisson event with this rate occurs within ``dt_s`` seconds."""
    return rate_per_h > 0 and rng.random() < 1.0 - math.exp(-rate_per_h * dt_s / 3600.0)


def next_state(state: State, on_shift: bool, dt_s: float, rng: random.Random) -> State:
    """Advance the Markov state machine of a line or machine by ``dt_s`` seconds.

    At most one transition happens per step; its target is drawn in proportion to the rates.
    """
    rates = (_ON_SHIFT_RATES_PER_H if on_shift else _OFF_SHIFT_RATES_PER_H)[state]
    if not happens(sum(rates.values()), dt_s, rng):
        return state
    pick = rng.random() * sum(rates.values())
    for target, rate in rates.items():
        pick -= rate
        if pick < 0:
            return target
    return state  # pragma: no cover - floating point rounding of the last bucket


def initial_state(on_shift: bool, rng: random.Random) -> State:
    """Return a plausible state for a device first seen at a time with this shift status."""
    if not on_shift:
        return State.STOPPED
    return rng.choices(
        (State.RUNNING, State.IDLE, State.FAULT, State.STOPPED), weights=(85, 8, 2, 5)
    )[0]


@dataclass(slots=True)
class Noise:
    """Ornstein-Uhlenbeck noise: stationary deviation ``sigma``, time constant ``tau_s``."""

    sigma: float
    tau_s: float = _NOISE_TAU_S
    value: float = 0.0

    def step(self, dt_s: float, rng: random.Random) -> float:
        """Advance by ``dt_s`` seconds and return the new value."""
        decay = math.exp(-dt_s / self.tau_s)
        self.value = self.value * decay + self.sigma * math.sqrt(1 - decay * decay) * rng.gauss()
        return self.value


@dataclass(slots=True)
class ProductionLineModel:
    """A production line: state machine, speed and an output counter that resets on reboot."""

    capacity_units_per_hour: float
    shift: Shift
    restart_rate_per_h: float = DEFAULT_RESTART_RATE_PER_H
    state: State = State.STOPPED
    output_units: float = 0.0
    speed_upm: float = 0.0
    efficiency: float = 0.9
    restarts: int = 0
    last_ts: datetime | None = None
    _efficiency_noise: Noise = field(default_factory=lambda: Noise(sigma=0.03))

    @property
    def max_speed_upm(self) -> float:
        """Return the line's speed at full capacity, in units per minute."""
        return self.capacity_units_per_hour / 60.0

    def step(self, ts: datetime, rng: random.Random) -> Metrics:
        """Advance the line to ``ts`` and return its metrics."""
        on_shift = self.shift.on_shift(ts)
        if self.last_ts is None:
            self.state = initial_state(on_shift, rng)
            # The counter has been counting since the line was installed.
            self.output_units = float(rng.randrange(10_000, 5_000_000))
            self.efficiency = rng.uniform(0.8, 0.95)
        dt_s = _elapsed_s(self.last_ts, ts)
        self.last_ts = ts
        # Output made during (last_ts, ts] at the speed held over that interval.
        self.output_units += self.speed_upm * dt_s / 60.0
        if happens(self.restart_rate_per_h, dt_s, rng):
            self.restarts += 1
            self.output_units = 0.0
            self.state = State.STOPPED
        else:
            self.state = next_state(self.state, on_shift, dt_s, rng)
        efficiency = self.efficiency + self._efficiency_noise.step(dt_s, rng)
        efficiency = min(0.99, max(0.6, efficiency))
        self.speed_upm = self.max_speed_upm * efficiency if self.state is State.RUNNING else 0.0
        return {
            "state": self.state.value,
            "output_units": int(self.output_units),
            "speed_upm": round(self.speed_upm, 2),
        }

    @property
    def load(self) -> float:
        """Return the line's current share of its capacity, in [0, 1]."""
        return self.speed_upm / self.max_speed_upm


@dataclass(slots=True)
class MachineModel:
    """A machine: state machine, vibration (high when faulty) and a lagging temperature."""

    shift: Shift
    state: State = State.STOPPED
    vibration_base_mm_s: float = 2.5
    temp_c: float = 20.0
    last_ts: datetime | None = None
    _vibration_noise: Noise = field(default_factory=lambda: Noise(sigma=0.12, tau_s=120.0))
    _temp_noise: Noise = field(default_factory=lambda: Noise(sigma=0.5))

    def step(self, ts: datetime, rng: random.Random, ambient_c: float) -> Metrics:
        """Advance the machine to ``ts`` in a hall at ``ambient_c`` and return its metrics."""
        on_shift = self.shift.on_shift(ts)
        if self.last_ts is None:
            self.state = initial_state(on_shift, rng)
            self.vibration_base_mm_s = rng.uniform(1.2, 3.5)
            self.temp_c = ambient_c + (30.0 if self.state is State.RUNNING else 0.0)
        dt_s = _elapsed_s(self.last_ts, ts)
        self.last_ts = ts
        self.state = next_state(self.state, on_shift, dt_s, rng)
        factor = 1.0 + self._vibration_noise.step(dt_s, rng)
        if self.state is State.RUNNING:
            vibration = self.vibration_base_mm_s * factor
            heat_c = 32.0
        elif self.state is State.FAULT:
            # A worn bearing or imbalance: mostly above the 7.1 mm/s alarm line.
            vibration = rng.uniform(5.5, 16.0)
            heat_c = 48.0
        elif self.state is State.IDLE:
            vibration = 0.4 * factor
            heat_c = 12.0
        else:
            vibration = 0.05 * abs(factor)
            heat_c = 0.0
        target_c = ambient_c + heat_c
        self.temp_c += (target_c - self.temp_c) * (1.0 - math.exp(-dt_s / _THERMAL_TAU_S))
        temp_c = self.temp_c + self._temp_noise.step(dt_s, rng)
        return {
            "state": self.state.value,
            "vibration_mm_s": round(max(0.0, vibration), 3),
            "temp_c": round(temp_c, 2),
        }

    @property
    def load(self) -> float:
        """Return the machine's share of its rated power, in [0, 1]."""
        return {State.RUNNING: 1.0, State.FAULT: 0.3, State.IDLE: 0.25}.get(self.state, 0.0)


@dataclass(slots=True)
class PowerMeterModel:
    """A power meter: power follows the factory's load, energy integrates power."""

    rated_kw: float
    base_share: float = 0.15
    power_kw: float = 0.0
    energy_kwh: float = 0.0
    last_ts: datetime | None = None
    _noise: Noise = field(default_factory=lambda: Noise(sigma=0.02, tau_s=60.0))

    def step(self, ts: datetime, rng: random.Random, load: float) -> Metrics:
        """Advance the meter to ``ts`` at a factory load in [0, 1] and return its metrics."""
        base_kw = self.rated_kw * self.base_share
        power_kw = base_kw + (self.rated_kw - base_kw) * min(1.0, max(0.0, load))
        power_kw = max(0.0, power_kw * (1.0 + self._noise.step(_elapsed_s(self.last_ts, ts), rng)))
        if self.last_ts is None:
            self.energy_kwh = float(rng.randrange(100_000, 20_000_000))
        else:
            # Trapezoidal rule over (last_ts, ts]: kW * h = kWh.
            dt_s = _elapsed_s(self.last_ts, ts)
            self.energy_kwh += (self.power_kw + power_kw) / 2.0 * dt_s / 3600.0
        self.last_ts = ts
        self.power_kw = power_kw
        return {"power_kw": round(power_kw, 3), "energy_kwh": round(self.energy_kwh, 3)}


class Episode(StrEnum):
    """A spell of bad conditions that takes an environment sensor past its alarm thresholds."""

    HEAT = "heat"
    HUMID = "humid"
    DRY = "dry"
    SMOG = "smog"


@dataclass(slots=True)
class EnvSensorModel:
    """An indoor environment sensor: diurnal and seasonal temperature, humidity and PM2.5."""

    shift: Shift
    episode_rate_per_h: float = 1 / 72
    episode: Episode | None = None
    episode_until: datetime | None = None
    offset_c: float = 0.0
    last_ts: datetime | None = None
    _temp_noise: Noise = field(default_factory=lambda: Noise(sigma=0.6))
    _humidity_noise: Noise = field(default_factory=lambda: Noise(sigma=3.0))
    _pm_noise: Noise = field(default_factory=lambda: Noise(sigma=8.0))

    def step(self, ts: datetime, rng: random.Random, load: float) -> Metrics:
        """Advance the sensor to ``ts`` at a factory load in [0, 1] and return its metrics."""
        if self.last_ts is None:
            self.offset_c = rng.uniform(-1.5, 1.5)
        dt_s = _elapsed_s(self.last_ts, ts)
        self.last_ts = ts
        if self.episode is not None and self.episode_until is not None and ts >= self.episode_until:
            self.episode = None
        if self.episode is None and happens(self.episode_rate_per_h, dt_s, rng):
            self.episode = rng.choice(list(Episode))
            self.episode_until = ts + timedelta(minutes=rng.uniform(10, 60))
        temp_c = hall_temperature_c(ts, self.shift) + self.offset_c + 3.0 * load
        temp_c += self._temp_noise.step(dt_s, rng)
        day = math.sin(2 * math.pi * (self.shift.local_hour(ts) - 9.0) / 24.0)
        humidity = 55.0 - 12.0 * day + self._humidity_noise.step(dt_s, rng)
        # Traffic peaks around 08:00 and 19:00 and the factory's own dust.
        hour = self.shift.local_hour(ts)
        rush = math.exp(-(((hour - 8.0) / 2.0) ** 2)) + math.exp(-(((hour - 19.0) / 2.0) ** 2))
        pm25 = 28.0 + 18.0 * rush + 10.0 * load + self._pm_noise.step(dt_s, rng)
        if self.episode is Episode.HEAT:
            # A cooling failure: the hall heats past the 40 °C alarm line whatever the season.
            temp_c = max(temp_c + 12.0, 41.0 + 4.0 * rng.random())
        elif self.episode is Episode.HUMID:
            humidity = 90.0 + 4.0 * rng.random()
        elif self.episode is Episode.DRY:
            humidity = 5.0 + 3.0 * rng.random()
        elif self.episode is Episode.SMOG:
            pm25 += 110.0
        return {
            "temp_c": round(temp_c, 2),
            "humidity_pct": round(min(100.0, max(0.0, humidity)), 1),
            "pm25_ugm3": round(max(0.0, pm25), 1),
        }
