"""The demo fleet's calendars, and a simulated factory that follows its calendar."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas.fleet import Calendar, Device, Factory, builtin_device_types, parse_fleet
from services.core.calendar import calendar_in_force, is_scheduled, work_calendar
from simulators.fleet import dump_fleet_yaml, generate_demo_fleet
from simulators.plant import FactorySimulator, factory_rng

TYPES = {t.id: t for t in builtin_device_types()}
# Tuesday 2026-12-01 00:00 UTC is 08:00 in Shanghai.
TUESDAY_8 = datetime(2026, 12, 1, tzinfo=UTC)


def test_demo_fleet_has_day_two_shift_and_round_the_clock_calendars() -> None:
    """Each park has a weekday calendar; some factories work two shifts, some 24/7."""
    fleet = generate_demo_fleet()
    kinds: Counter[str] = Counter()
    saturday_noon = datetime(2026, 12, 5, 4, tzinfo=UTC)  # 12:00 in Shanghai
    for park in fleet.parks:
        assert park.calendar is not None
        assert park.timezone == "Asia/Shanghai"
        for f in park.factories:
            calendar = work_calendar(calendar_in_force(park.calendar, f.calendar), park.timezone)
            if f.calendar is None:
                kinds["weekdays"] += 1
                assert not is_scheduled(calendar, saturday_noon)  # weekends off
            elif len(f.calendar.shifts) == 2:
                kinds["two shifts"] += 1
            else:
                kinds["24/7"] += 1
                assert is_scheduled(calendar, saturday_noon - timedelta(hours=8))
    assert set(kinds) == {"weekdays", "two shifts", "24/7"}
    assert generate_demo_fleet() == generate_demo_fleet()
    # The YAML reads back to the same fleet (times stay quoted strings).
    assert parse_fleet(dump_fleet_yaml(fleet)) == fleet


def test_simulated_factory_follows_its_calendar() -> None:
    """Lines run on shift and stop off it; the meters then draw only the site's base load."""
    calendar = Calendar.model_validate(
        {"shifts": [{"days": ["tue"], "start": "08:00", "end": "12:00"}]}
    )
    devices = [
        Device(id="c-line-1", type="production_line", capacity_units_per_hour=600),
        Device(id="c-meter-1", type="power_meter"),
    ]
    sim = FactorySimulator(
        "c-park",
        Factory(id="c-f01", industry="food", devices=devices),
        TYPES,
        work_calendar(calendar, "Asia/Shanghai"),
    )
    rng = factory_rng(1, "c-f01")
    states: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    power: dict[bool, list[float]] = {True: [], False: []}
    for minute in range(8 * 60):  # 08:00 to 16:00 in Shanghai
        ts = TUESDAY_8 + timedelta(minutes=minute)
        samples = {s.device_id: s.metrics for s in sim.step(ts, rng)}
        # Judge by the calendar, leaving 30 minutes after the shift's end to wind down.
        on = minute < 4 * 60
        if on or minute >= 4 * 60 + 30:
            states[on][str(samples["c-line-1"]["state"])] += 1
            power[on].append(float(samples["c-meter-1"]["power_kw"]))
    assert states[True]["running"] > 0.7 * sum(states[True].values())
    assert states[False]["running"] == 0
    assert set(states[False]) <= {"stopped", "idle"}
    # Off shift the meter reads the site's base load, well under the on-shift mean.
    assert max(power[False]) < 0.6 * (sum(power[True]) / len(power[True]))
