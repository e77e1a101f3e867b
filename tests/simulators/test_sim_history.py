"""Tests of the simulator's history: its ticks, and counters that join the live ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.fleet import Calendar, Device, Factory, Fleet, Park, builtin_device_types
from simulators.__main__ import _build_sites, build_parser
from simulators.history import HistorySpan, first_pass, shift_counters
from simulators.plant import FactorySimulator, factory_rng

LIVE_TS = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # 11:00 in China: on shift
INTERVAL = timedelta(seconds=5)


def factory() -> Factory:
    """Return a factory with one device of each type."""
    return Factory(
        id="f1",
        industry="electronics",
        devices=[
            Device(id="f1-meter-1", type="power_meter"),
            Device(id="f1-line-1", type="production_line", capacity_units_per_hour=2400),
            Device(id="f1-env-1", type="env_sensor"),
            Device(id="f1-mach-1", type="machine"),
        ],
    )


def test_history_ticks_end_one_interval_before_the_first_live_tick() -> None:
    """The span holds whole intervals, oldest first, and stops short of the live tick."""
    span = HistorySpan.before(LIVE_TS, INTERVAL, 32.0)
    assert span.timestamps() == [LIVE_TS - k * INTERVAL for k in (6, 5, 4, 3, 2, 1)]
    assert HistorySpan.before(LIVE_TS, INTERVAL, 0.0).timestamps() == []


def test_shifted_history_counters_rise_into_the_live_values() -> None:
    """Each history counter is non-decreasing and ends at most one step below its live value."""
    types = {t.id: t for t in builtin_device_types()}
    plant = factory()
    by_device = {d.id: types[d.type] for d in plant.devices}
    live = FactorySimulator("p1", plant, types).step(LIVE_TS, factory_rng(7, "f1"))
    live_first = {s.device_id: s.metrics for s in live}
    span = HistorySpan.before(LIVE_TS, INTERVAL, 3 * 3600)

    def history() -> FactorySimulator:
        return FactorySimulator("p1", plant, types, restart_rate_per_h=0.0)

    first = first_pass(
        history(), factory_rng(7, "f1/history"), span, live_first, by_device, keep_ticks=12
    )
    offsets = first.offsets
    assert set(offsets) == {("f1-meter-1", "energy_kwh"), ("f1-line-1", "output_units")}
    simulator, rng = history(), factory_rng(7, "f1/history")
    series: dict[tuple[str, str], list[float]] = {key: [] for key in offsets}
    for ts in span.timestamps():
        for sample in simulator.step(ts, rng):
            moved = shift_counters(
                sample.metrics, sample.device_id, offsets, by_device[sample.device_id]
            )
            for device_id, metric in offsets:
                if device_id == sample.device_id:
                    value = moved[metric]
                    assert isinstance(value, int | float)
                    series[(device_id, metric)].append(float(value))
    # The kept ticks are the history's last ones, as the second pass simulates them again.
    assert [ts for ts, _ in first.recent] == span.timestamps()[-12:]
    for (device_id, metric), values in series.items():
        end = float(live_first[device_id][metric])
        assert values == sorted(values), f"{metric} went down in the history"
        assert values[-1] <= end
        # One 5 s step of the largest line or meter here is far below a tenth of an hour's.
        assert end - values[-1] < (values[-1] - values[0]) / 30 + 1


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [(100, 50.0, 150), (100, -150.0, 0), (12.3456, 1.0, 13.346)],
)
def test_shift_keeps_a_counters_kind_and_never_goes_below_zero(
    value: float, offset: float, expected: float
) -> None:
    """Whole counters stay whole, decimals keep three places, and nothing drops below zero."""
    moved = shift_counters({"c": value, "g": 1.5}, "d", {("d", "c"): offset}, None)
    assert moved == {"c": expected, "g": 1.5}
    assert type(moved["c"]) is type(expected)


def test_history_follows_the_factorys_calendar_as_live_does() -> None:
    """A factory off shift in its calendar has its lines stopped in the history too."""
    calendar = {"shifts": [{"days": ["mon"], "start": "08:00", "end": "09:00"}]}
    fleet = Fleet(
        parks=[
            Park(
                id="p1",
                factories=[factory().model_copy(update={"calendar": Calendar(**calendar)})],
            )
        ]
    )
    args = build_parser().parse_args(["run", "--fleet", "-", "--port", "1"])
    [site] = _build_sites(fleet, args)
    assert site.history is not None  # a JSON gateway has a history
    simulator, rng = site.history.make_simulator(), site.history.make_rng()
    states = {
        sample.metrics["state"]
        for tick in range(60)
        for sample in simulator.step(LIVE_TS + tick * INTERVAL, rng)  # a Tuesday
        if "state" in sample.metrics
    }
    assert states == {"stopped"}
