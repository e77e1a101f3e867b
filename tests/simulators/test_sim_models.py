"""Tests of the seeded signal models and of a factory simulated as a whole."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from schemas.fleet import Device, DeviceType, Factory, MetricKind, builtin_device_types
from simulators.fleet import generate_demo_fleet
from simulators.models import (
    VIBRATION_ALARM_MM_S,
    EnvSensorModel,
    MachineModel,
    Metrics,
    PowerMeterModel,
    ProductionLineModel,
    ShiftPlan,
    State,
    shift_plan_for,
)
from simulators.plant import (
    DeviceSample,
    FactorySimulator,
    clamp_to_range,
    corrupt_metrics,
    factory_rng,
)

TYPES = {t.id: t for t in builtin_device_types()}
# 2026-07-01 00:00 UTC is 08:00 in China: the start of a day shift.
START = datetime(2026, 7, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DAY_SHIFT = ShiftPlan()


def times(days: float, step: timedelta = MINUTE, start: datetime = START) -> list[datetime]:
    """Return sampling times over ``days`` days."""
    return [start + i * step for i in range(int(timedelta(days=days) / step))]


def factory(industry: str = "smart-manufacturing", devices: int = 40) -> Factory:
    """Return a factory with several devices of every type."""
    parts = [("meter", "power_meter"), ("line", "production_line"), ("env", "env_sensor")]
    result = [
        Device(
            id=f"t-f01-{short}-{n}",
            type=type_id,
            capacity_units_per_hour=600 * n if type_id == "production_line" else None,
        )
        for short, type_id in parts
        for n in range(1, 4)
    ]
    result += [Device(id=f"t-f01-mach-{n}", type="machine") for n in range(devices - len(result))]
    return Factory(id="t-f01", industry=industry, devices=result)


def simulate(
    fac: Factory, days: float, seed: int = 1, step: timedelta = MINUTE, **kwargs: float
) -> list[tuple[datetime, list[DeviceSample], float]]:
    """Run a factory simulator; return each time's samples and the factory load."""
    sim = FactorySimulator("t-park", fac, TYPES, **kwargs)
    rng = factory_rng(seed, fac.id)
    return [(ts, sim.step(ts, rng), sim.load()) for ts in times(days, step)]


def violations(metrics: Metrics, device_type: DeviceType) -> list[str]:
    """Return what makes these metrics invalid for their device type (empty when valid)."""
    problems = []
    for name, value in metrics.items():
        spec = device_type.metrics.get(name)
        if spec is None:
            problems.append(f"unknown metric {name}")
        elif spec.kind is MetricKind.STATE:
            if not isinstance(value, str) or value not in (spec.states or []):
                problems.append(f"bad state {name}={value!r}")
        elif isinstance(value, str):
            problems.append(f"text for number {name}={value!r}")
        elif (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max
        ):
            problems.append(f"out of range {name}={value}")
    return problems


def test_line_output_counter_only_grows_except_across_a_restart() -> None:
    """output_units never decreases unless the line rebooted, and then restarts near zero."""
    line = ProductionLineModel(1200, DAY_SHIFT, restart_rate_per_h=0.02)
    rng = random.Random(5)
    previous = 0
    decreases = 0
    for ts in times(days=14):
        restarts = line.restarts
        value = line.step(ts, rng)["output_units"]
        assert isinstance(value, int)
        if line.restarts > restarts:
            assert value <= 1200 / 60 + 1
            decreases += value < previous
        else:
            assert value >= previous
        previous = value
    assert decreases >= 1


def test_line_output_grows_no_faster_than_capacity_and_speed_matches_state() -> None:
    """Output per interval stays within capacity; speed is positive exactly when running."""
    capacity = 900.0
    line = ProductionLineModel(capacity, DAY_SHIFT, restart_rate_per_h=0.0)
    rng = random.Random(11)
    previous = None
    for ts in times(days=7):
        metrics = line.step(ts, rng)
        speed = metrics["speed_upm"]
        assert isinstance(speed, float)
        assert 0 <= speed <= capacity / 60
        assert (speed > 0) == (metrics["state"] == State.RUNNING)
        output = metrics["output_units"]
        assert isinstance(output, int)
        if previous is not None:
            assert 0 <= output - previous <= capacity * MINUTE.total_seconds() / 3600 + 1
        previous = output


@pytest.mark.parametrize("model", ["line", "machine"])
def test_state_machine_visits_every_state_over_a_long_seeded_run(model: str) -> None:
    """Over a month, lines and machines run, idle, fail and stop."""
    rng = random.Random(2)
    seen: set[str] = set()
    line = ProductionLineModel(600, DAY_SHIFT)
    machine = MachineModel(DAY_SHIFT)
    for ts in times(days=30, step=timedelta(minutes=5)):
        metrics = line.step(ts, rng) if model == "line" else machine.step(ts, rng, 20.0)
        seen.add(str(metrics["state"]))
    assert seen == {s.value for s in State}


def test_day_shift_factory_runs_by_day_and_stops_at_night() -> None:
    """Lines of a day-shift factory mostly run at 11:00 local and are stopped at 02:00."""
    runs = simulate(factory(), days=6, step=timedelta(minutes=5))
    shift = shift_plan_for("t-f01", "smart-manufacturing")

    def running_share(hour: int) -> float:
        states = [
            s.metrics["state"]
            for ts, samples, _ in runs
            if int(shift.local_hour(ts)) == hour
            for s in samples
            if "-line-" in s.device_id
        ]
        return states.count("running") / len(states)

    assert running_share(11) > 0.6
    assert running_share(2) == 0.0


def test_continuous_industry_runs_around_the_clock() -> None:
    """A new-materials plant has a 24 h shift plan and runs its lines at night too."""
    assert shift_plan_for("x", "new-materials").round_the_clock
    assert not shift_plan_for("x", "food").round_the_clock
    runs = simulate(factory("new-materials"), days=4, step=timedelta(minutes=5))
    shift = shift_plan_for("t-f01", "new-materials")
    night = [
        s.metrics["state"]
        for ts, samples, _ in runs
        if shift.local_hour(ts) < 5
        for s in samples
        if "-line-" in s.device_id
    ]
    assert night.count("running") / len(night) > 0.6


def test_day_shift_starts_between_half_past_seven_and_half_past_eight() -> None:
    """Day shifts are 12 h long and staggered by factory."""
    starts = {shift_plan_for(f"f{i}", "food").start_h for i in range(50)}
    assert len(starts) > 1
    assert all(7.5 <= s <= 8.5 for s in starts)
    plan = ShiftPlan(start_h=8, end_h=20)
    assert plan.on_shift(datetime(2026, 1, 5, 2, tzinfo=UTC))  # 10:00 in China
    assert not plan.on_shift(datetime(2026, 1, 5, 15, tzinfo=UTC))  # 23:00 in China


def test_every_value_stays_within_its_valid_range() -> None:
    """Over a week of the demo fleet's first park, every sample is valid for its type."""
    fleet = generate_demo_fleet(parks=1, factories_per_park=4)
    types = fleet.all_device_types()
    device_types = {d.id: d.type for f in fleet.parks[0].factories for d in f.devices}
    for fac in fleet.parks[0].factories:
        sim = FactorySimulator("hebi-tech", fac, types, episode_rate_per_h=0.1)
        rng = factory_rng(7, fac.id)
        for ts in times(days=7, step=timedelta(minutes=10)):
            for sample in sim.step(ts, rng):
                assert not violations(sample.metrics, types[device_types[sample.device_id]])


def test_power_follows_production() -> None:
    """The factory's metered power rises and falls with its production load."""
    runs = simulate(factory(), days=3)
    loads = [load for _, _, load in runs]
    power = [
        sum(float(s.metrics["power_kw"]) for s in samples if "-meter-" in s.device_id)
        for _, samples, _ in runs
    ]
    assert statistics.correlation(loads, power) > 0.95
    busy = [p for p, load in zip(power, loads, strict=True) if load > 0.5]
    idle = [p for p, load in zip(power, loads, strict=True) if load == 0]
    assert busy
    assert idle
    assert min(busy) > 2 * max(idle)


def test_energy_counter_integrates_power() -> None:
    """energy_kwh grows by the trapezoidal integral of power_kw and never decreases."""
    meter = PowerMeterModel(rated_kw=500)
    rng = random.Random(3)
    samples = [
        meter.step(ts, rng, load=0.5 + 0.5 * ((i // 60) % 2)) for i, ts in enumerate(times(days=1))
    ]
    energy = [float(m["energy_kwh"]) for m in samples]
    power = [float(m["power_kw"]) for m in samples]
    assert all(b >= a for a, b in itertools.pairwise(energy))
    integral = sum((a + b) / 2 / 60 for a, b in itertools.pairwise(power))
    assert energy[-1] - energy[0] == pytest.approx(integral, rel=1e-3)


def test_env_sensor_is_warmer_in_the_afternoon_and_breaches_thresholds_occasionally() -> None:
    """Temperature follows the day; bad spells take values past the alarm thresholds."""
    sensor = EnvSensorModel(DAY_SHIFT, episode_rate_per_h=0.05)
    rng = random.Random(9)
    afternoon, night, breaches = [], [], 0
    for ts in times(days=20, step=timedelta(minutes=5)):
        metrics = sensor.step(ts, rng, load=0.0)
        temp, humidity, pm25 = (float(metrics[k]) for k in ("temp_c", "humidity_pct", "pm25_ugm3"))
        hour = DAY_SHIFT.local_hour(ts)
        if 14 <= hour < 16 and sensor.episode is None:
            afternoon.append(temp)
        elif 2 <= hour < 4 and sensor.episode is None:
            night.append(temp)
        breaches += temp > 40 or not 10 <= humidity <= 85 or pm25 > 75
    assert statistics.mean(afternoon) > statistics.mean(night) + 2
    assert 0 < breaches < len(times(days=20, step=timedelta(minutes=5))) / 4


def test_machine_vibration_exceeds_the_alarm_line_only_when_faulty() -> None:
    """A running machine stays below 7.1 mm/s; a faulty one often exceeds it."""
    machine = MachineModel(DAY_SHIFT)
    rng = random.Random(4)
    by_state: dict[str, list[float]] = {s.value: [] for s in State}
    for ts in times(days=30, step=timedelta(minutes=2)):
        metrics = machine.step(ts, rng, ambient_c=20.0)
        by_state[str(metrics["state"])].append(float(metrics["vibration_mm_s"]))
    assert max(by_state["running"]) < VIBRATION_ALARM_MM_S
    assert max(by_state["stopped"]) < 1
    faulty = by_state["fault"]
    assert sum(v > VIBRATION_ALARM_MM_S for v in faulty) > len(faulty) / 2


def test_simulation_is_deterministic_for_a_seed() -> None:
    """The same seed reproduces every sample; another seed does not."""
    first = [samples for _, samples, _ in simulate(factory(), days=0.5, seed=42)]
    again = [samples for _, samples, _ in simulate(factory(), days=0.5, seed=42)]
    other = [samples for _, samples, _ in simulate(factory(), days=0.5, seed=43)]
    assert first == again
    assert first != other


def test_time_must_not_go_backwards() -> None:
    """Stepping a model to an earlier time is refused."""
    line = ProductionLineModel(600, DAY_SHIFT)
    rng = random.Random(1)
    line.step(START, rng)
    with pytest.raises(ValueError, match="backwards"):
        line.step(START - MINUTE, rng)


def test_corrupted_metrics_are_invalid_for_their_type() -> None:
    """Deliberately bad data is always refusable: unknown metric, wrong kind or out of range."""
    rng = random.Random(8)
    good: dict[str, Metrics] = {
        "power_meter": {"power_kw": 10.0, "energy_kwh": 5.0},
        "production_line": {"state": "running", "output_units": 5, "speed_upm": 3.0},
        "env_sensor": {"temp_c": 20.0, "humidity_pct": 50.0, "pm25_ugm3": 30.0},
        "machine": {"state": "idle", "vibration_mm_s": 0.4, "temp_c": 30.0},
    }
    for type_id, metrics in good.items():
        assert not violations(metrics, TYPES[type_id])
        for _ in range(50):
            assert violations(corrupt_metrics(metrics, TYPES[type_id], rng), TYPES[type_id])


def test_bad_data_rate_corrupts_about_that_share_of_samples() -> None:
    """With bad_data_rate, some samples are invalid; without it, none."""
    runs = simulate(factory(), days=0.2, bad_data_rate=0.1)
    device_types = {d.id: d.type for d in factory().devices}
    bad = sum(
        bool(violations(s.metrics, TYPES[device_types[s.device_id]]))
        for _, samples, _ in runs
        for s in samples
    )
    total = sum(len(samples) for _, samples, _ in runs)
    assert 0.05 * total < bad < 0.15 * total


def test_clamp_keeps_numbers_inside_the_valid_range() -> None:
    """Clamping moves numbers to the nearest bound and leaves states alone."""
    clamped = clamp_to_range(
        {"humidity_pct": 101.5, "temp_c": -70.0, "pm25_ugm3": 3.0}, TYPES["env_sensor"]
    )
    assert clamped == {"humidity_pct": 100.0, "temp_c": -60.0, "pm25_ugm3": 3.0}
    state: Metrics = {"state": "running", "vibration_mm_s": -1.0}
    assert clamp_to_range(state, TYPES["machine"]) == {"state": "running", "vibration_mm_s": 0.0}


def test_devices_of_unknown_types_are_skipped() -> None:
    """A fleet's own device types have no model: they are listed, not simulated."""
    fac = Factory(
        id="t-f02",
        devices=[Device(id="t-gas-1", type="gas_meter"), Device(id="t-m-1", type="power_meter")],
    )
    sim = FactorySimulator("t-park", fac, TYPES)
    assert sim.skipped == ["t-gas-1"]
    assert [s.device_id for s in sim.step(START, random.Random(1))] == ["t-m-1"]
