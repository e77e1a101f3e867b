"""Live park signals, worked out by hand from PRODUCT.md's table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from schemas.fleet import parse_fleet
from services.core.alarms import AlarmReason, MetricValue
from services.core.counters import CounterSample, increase_in_bucket, increase_over, step
from services.core.registry import DeviceEntry, registry_from_fleet
from services.core.signals import (
    DeviceObservation,
    OfflineReason,
    ParkCounts,
    Signal,
    StatusPoint,
    combine_parks,
    health_components,
    health_index,
    offline_reason,
    park_signals,
    round_half_up,
)

AS_OF = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
W = 300.0
T = 90.0

FLEET = """
parks:
  - id: p1
    city: Hebi
    factories:
      - id: f1
        devices:
          - {id: m1, type: power_meter}
          - {id: l1, type: production_line, capacity_units_per_hour: 1200}
          - {id: e1, type: env_sensor, thresholds: {temp_c: {min: 5, max: 35}}}
          - {id: x1, type: machine}
      - id: f2
        devices:
          - {id: l2, type: production_line, capacity_units_per_hour: 600}
          - {id: m2, type: power_meter}
      - id: f3
        devices:
          - {id: e2, type: env_sensor}
          - {id: e3, type: env_sensor, thresholds: {temp_c: {max: 45}}}
"""

DEVICES: dict[str, DeviceEntry] = dict(registry_from_fleet(parse_fleet(FLEET)).devices)


def at(seconds_before: float) -> datetime:
    """Return the instant ``seconds_before`` as_of."""
    return AS_OF - timedelta(seconds=seconds_before)


def obs(
    device_id: str,
    *,
    last: float | None = None,
    status: tuple[bool, float] | None = None,
    values: Mapping[str, float | str] | None = None,
    increases: dict[str, float] | None = None,
    window: set[str] | None = None,
) -> DeviceObservation:
    """Build an observation: times in seconds before as_of, values all read at ``last``."""
    last_ts = at(last) if last is not None else None
    latest = {}
    for metric, raw in (values or {}).items():
        assert last_ts is not None
        if isinstance(raw, str):
            latest[metric] = MetricValue(ts=last_ts, text=raw)
        else:
            latest[metric] = MetricValue(ts=last_ts, value=raw)
    return DeviceObservation(
        device=DEVICES[device_id],
        last_reading_ts=last_ts,
        status=StatusPoint(status[0], at(status[1])) if status else None,
        latest=latest,
        increases=increases or {},
        window_metrics=frozenset(window if window is not None else latest),
    )


def scenario() -> list[DeviceObservation]:
    """The worked park: see test_worked_park_scenario for each device's part."""
    return [
        obs("m1", last=10, values={"power_kw": 120.0}, increases={"energy_kwh": 15.0},
            window={"power_kw", "energy_kwh"}),
        obs("l1", last=30, values={"state": "running", "speed_upm": 20.0},
            increases={"output_units": 80.0}, window={"state", "output_units", "speed_upm"}),
        # 36 °C is inside the type's 0..40 but above the device's own 35.
        obs("e1", last=15, values={"temp_c": 36.0, "humidity_pct": 50.0, "pm25_ugm3": 20.0}),
        # Silent for 120 s > 90 s: offline, so its fault does not count as an alarm.
        obs("x1", last=120, values={"state": "fault", "vibration_mm_s": 9.0}),
        # Last will at 09:59:50, after its last reading at 09:59:40: offline.
        obs("l2", last=20, status=(False, 10), values={"state": "running"},
            increases={"output_units": 20.0}, window={"state", "output_units"}),
        # An offline status older than its newest reading does not count.
        obs("m2", last=5, status=(False, 60), values={"power_kw": 30.0},
            increases={"energy_kwh": 5.0}, window={"power_kw", "energy_kwh"}),
        obs("e2"),  # registered, never reported
        # 42 °C breaks the type's 40 but not the device's own 45: no alarm.
        obs("e3", last=40, values={"temp_c": 42.0, "humidity_pct": 50.0, "pm25_ugm3": 10.0}),
    ]  # fmt: skip


def test_worked_park_scenario() -> None:
    """Every signal of a mixed park equals the value worked out by hand."""
    result = park_signals(scenario(), as_of=AS_OF, window_s=W, online_timeout_s=T)
    s = result.signals
    # Online: m1, l1, e1, m2, e3 = 5 of 8 (x1 silent, l2 last will, e2 never seen).
    assert s.online_rate == pytest.approx(5 / 8)
    # Factories with lines: f1, f2; operating: f1 only (l2 is offline).
    assert s.operating_rate == pytest.approx(1 / 2)
    # Output 80 + 20 = 100 units over capacity (1200 + 600) u/h x 300 s / 3600 s = 150 units.
    assert s.capacity_utilization == pytest.approx(100 / 150)
    assert s.power_kw == pytest.approx(150.0)  # online meters m1 120 + m2 30
    assert s.energy_kwh == pytest.approx(20.0)  # 15 + 5
    assert s.energy_intensity_kwh_per_unit == pytest.approx(0.2)  # 20 kWh / 100 units
    assert s.alarm_rate == pytest.approx(1 / 5)  # e1 of the 5 online devices
    # 100 x (0.30 x 0.5 + 0.25 x 0.6667 + 0.25 x 0.625 + 0.20 x 0.8) = 63.2917 -> 63.3
    assert s.health_index == 63.3
    c = result.counts
    assert c == ParkCounts(
        devices_registered=8,
        devices_online=5,
        offline_no_data=1,
        offline_silence=1,
        offline_last_will=1,
        factories=3,
        factories_with_lines=2,
        factories_operating=1,
        lines=2,
        lines_online=1,
        lines_running=1,
        lines_in_fault=0,
        line_capacity_units_per_hour=1800.0,
        output_units_increase=100.0,
        meters=2,
        meters_online=2,
        energy_kwh_increase=20.0,
        devices_in_alarm=1,
    )
    assert [(a.device_id, a.metric, a.reason, a.threshold) for a in result.alarms] == [
        ("e1", "temp_c", AlarmReason.ABOVE_MAX, 35.0)
    ]
    points = {name: round(comp.points, 4) for name, comp in s.components.items()}
    assert points == {
        "operating_rate": 15.0,
        "capacity_utilization": 16.6667,
        "online_rate": 15.625,
        "no_alarm": 16.0,
    }


def test_worked_park_coverage() -> None:
    """Coverage counts, per signal, the devices it depends on that reported in the window."""
    cov = park_signals(scenario(), as_of=AS_OF, window_s=W, online_timeout_s=T).coverage
    pairs = {signal: (c.devices, c.reporting) for signal, c in cov.items()}
    assert pairs == {
        Signal.ONLINE_RATE: (8, 7),  # all but e2
        Signal.OPERATING_RATE: (2, 2),  # l1, l2 sent a state
        Signal.CAPACITY_UTILIZATION: (2, 2),
        Signal.POWER_KW: (2, 2),
        Signal.ENERGY_KWH: (2, 2),
        Signal.ENERGY_INTENSITY: (4, 4),
        Signal.ALARM_RATE: (6, 5),  # lines, machine, env sensors; e2 silent
        Signal.HEALTH_INDEX: (8, 7),
    }
    assert cov[Signal.ONLINE_RATE].share == pytest.approx(7 / 8)


def test_line_in_fault_is_an_alarm_and_stops_its_factory() -> None:
    """A line whose latest state is fault is in alarm and its factory is not operating."""
    devices = [
        obs("l1", last=5, values={"state": "fault"}, increases={"output_units": 0.0}),
        obs("l2", last=5, values={"state": "running"}, increases={"output_units": 50.0}),
    ]
    result = park_signals(devices, as_of=AS_OF, window_s=W, online_timeout_s=T)
    assert result.signals.operating_rate == pytest.approx(1 / 2)  # f2 runs, f1 does not
    assert result.signals.alarm_rate == pytest.approx(1 / 2)
    assert result.counts.lines_in_fault == 1
    assert [(a.device_id, a.reason, a.text) for a in result.alarms] == [
        ("l1", AlarmReason.STATE, "fault")
    ]


@pytest.mark.parametrize(
    ("device_id", "values", "alarm"),
    [
        ("e2", {"temp_c": 41.0}, AlarmReason.ABOVE_MAX),  # type max 40
        ("e2", {"temp_c": -1.0}, AlarmReason.BELOW_MIN),  # type min 0
        ("e2", {"temp_c": 40.0}, None),  # on the bound is inside
        ("e1", {"temp_c": 4.0}, AlarmReason.BELOW_MIN),  # device min 5 beats type min 0
        ("e1", {"temp_c": 35.5}, AlarmReason.ABOVE_MAX),  # device max 35 beats type max 40
        ("e3", {"temp_c": 44.0}, None),  # device max 45 beats type max 40
        ("e3", {"temp_c": -5.0}, None),  # device override has no min, so none applies
        ("e2", {"pm25_ugm3": 80.0}, AlarmReason.ABOVE_MAX),  # another gauge of the type
        ("x1", {"vibration_mm_s": 7.2}, AlarmReason.ABOVE_MAX),
        ("x1", {"temp_c": 250.0}, None),  # the machine's temp_c has no threshold
        ("m1", {"power_kw": 90000.0}, None),  # no threshold at all
    ],
)
def test_gauge_thresholds_per_device_beat_the_types(
    device_id: str, values: dict[str, float], alarm: AlarmReason | None
) -> None:
    """A gauge outside its thresholds (the device's own when it has them) raises an alarm."""
    result = park_signals(
        [obs(device_id, last=1, values=values)], as_of=AS_OF, window_s=W, online_timeout_s=T
    )
    reasons = [a.reason for a in result.alarms]
    assert reasons == ([alarm] if alarm else [])
    assert result.signals.alarm_rate == (1.0 if alarm else 0.0)


def test_park_with_no_output_has_null_intensity() -> None:
    """No output increase in the window: intensity is null, capacity utilization 0."""
    devices = [
        obs("m1", last=1, values={"power_kw": 10.0}, increases={"energy_kwh": 3.0}),
        obs("l1", last=1, values={"state": "idle"}, increases={"output_units": 0.0}),
    ]
    s = park_signals(devices, as_of=AS_OF, window_s=W, online_timeout_s=T).signals
    assert s.energy_intensity_kwh_per_unit is None
    assert s.capacity_utilization == 0.0
    assert s.energy_kwh == 3.0
    assert s.operating_rate == 0.0


def test_no_device_online_gives_zero_alarm_rate() -> None:
    """With no device online alarm_rate is 0, and the index keeps its no-alarm points."""
    devices = [obs("x1", last=600, values={"state": "fault"}), obs("e2")]
    s = park_signals(devices, as_of=AS_OF, window_s=W, online_timeout_s=T).signals
    assert s.online_rate == 0.0
    assert s.alarm_rate == 0.0
    assert s.health_index == 20.0  # 100 x 0.20 x (1 - 0)


def test_empty_park_is_all_zero_but_no_alarm() -> None:
    """A park without devices divides by nothing: ratios are 0, intensity null."""
    s = park_signals([], as_of=AS_OF, window_s=W, online_timeout_s=T).signals
    assert (s.online_rate, s.operating_rate, s.capacity_utilization, s.alarm_rate) == (0, 0, 0, 0)
    assert s.energy_intensity_kwh_per_unit is None
    assert s.health_index == 20.0


def test_capacity_above_one_counts_as_one_in_the_index() -> None:
    """Output above capacity shows as is, but the index caps its term at 1."""
    devices = [obs("l1", last=1, values={"state": "running"}, increases={"output_units": 200.0})]
    s = park_signals(devices, as_of=AS_OF, window_s=W, online_timeout_s=T).signals
    assert s.capacity_utilization == pytest.approx(2.0)  # 200 / (1200 x 300 / 3600)
    assert s.components["capacity_utilization"].value == 1.0
    assert s.health_index == 100.0


@pytest.mark.parametrize(
    ("last", "status", "expected"),
    [
        (None, None, OfflineReason.NO_DATA),
        (0.0, None, None),
        (90.0, None, None),  # exactly the timeout old is still online
        (90.001, None, OfflineReason.SILENCE),
        (-1.0, None, OfflineReason.NO_DATA),  # only a reading after as_of
        (30.0, (False, 30.0), OfflineReason.LAST_WILL),  # offline at the reading's instant
        (30.0, (False, 10.0), OfflineReason.LAST_WILL),
        (30.0, (False, 31.0), None),  # an older will is superseded by the reading
        (30.0, (True, 10.0), None),
        (120.0, (False, 10.0), OfflineReason.SILENCE),  # silence is reported first
    ],
)
def test_online_rule(
    last: float | None, status: tuple[bool, float] | None, expected: OfflineReason | None
) -> None:
    """Online: newest reading at most 90 s old and no offline status sent since it."""
    status_point = StatusPoint(status[0], at(status[1])) if status else None
    last_ts = at(last) if last is not None else None
    assert offline_reason(last_ts, status_point, AS_OF, T) == expected


def test_city_recomputes_ratios_from_summed_counts() -> None:
    """A city's ratios come from summed counts, not from the average of its parks' ratios."""
    big = park_signals(
        [obs("m1", last=1, values={"power_kw": 1.0})], as_of=AS_OF, window_s=W, online_timeout_s=T
    )
    small = park_signals(
        [obs("e2"), obs("e3"), obs("x1", last=1, values={"state": "fault"})],
        as_of=AS_OF,
        window_s=W,
        online_timeout_s=T,
    )
    city = combine_parks([big, small], as_of=AS_OF, window_s=W)
    # Parks: 1/1 and 1/3 online; the city 2/4, not (1 + 1/3) / 2.
    assert city.signals.online_rate == pytest.approx(2 / 4)
    assert city.signals.alarm_rate == pytest.approx(1 / 2)  # x1 of the 2 online devices
    assert city.counts.devices_registered == 4
    assert city.coverage[Signal.ONLINE_RATE].devices == 4


@pytest.mark.parametrize(
    ("value", "expected"), [(63.25, 63.3), (63.24999, 63.2), (0.05, 0.1), (99.95, 100.0)]
)
def test_health_index_rounds_half_up(value: float, expected: float) -> None:
    """One decimal, halves rounded up."""
    assert round_half_up(value, 1) == expected


def test_health_index_weights() -> None:
    """The index is 30 % operating, 25 % capacity, 25 % online and 20 % freedom from alarm."""
    assert health_index(health_components(1.0, 0.0, 0.0, 1.0)) == 30.0
    assert health_index(health_components(0.0, 1.0, 0.0, 1.0)) == 25.0
    assert health_index(health_components(0.0, 0.0, 1.0, 1.0)) == 25.0
    assert health_index(health_components(0.0, 0.0, 0.0, 0.0)) == 20.0


# --- counters -------------------------------------------------------------------------


def samples(*pairs: tuple[float, float]) -> list[CounterSample]:
    """Counter samples from (seconds before as_of, value) pairs."""
    return [CounterSample(at(s), v) for s, v in pairs]


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # Baseline at exactly start (300 s before), then steady growth: 130 - 100.
        (samples((300, 100), (200, 110), (100, 120), (0, 130)), 30.0),
        # Only the last reading at or before start is the baseline: 130 - 100.
        (samples((400, 50), (350, 90), (301, 100), (0, 130)), 30.0),
        # A reset inside the window: +10, restart counts its whole value 5, then +7.
        (samples((300, 100), (240, 110), (180, 5), (120, 12)), 22.0),
        # A reset right after the baseline.
        (samples((310, 1000), (200, 3)), 3.0),
        # No baseline: the first reading inside the window only starts the count.
        (samples((200, 10), (100, 15)), 5.0),
        # A reading after as_of does not count; one exactly at as_of does.
        (samples((300, 0), (0, 4), (-1, 100)), 4.0),
        # A single reading, or none, means no increase.
        (samples((100, 42)), 0.0),
        ([], 0.0),
        # Unsorted input is sorted by time first.
        (samples((0, 130), (300, 100), (100, 120)), 30.0),
        # Equal values add nothing; a drop to zero then growth is a restart.
        (samples((300, 7), (200, 7), (100, 0), (50, 2)), 2.0),
    ],
)
def test_counter_increase_over_window(readings: list[CounterSample], expected: float) -> None:
    """Counter increase over (as_of - W, as_of] by PRODUCT.md's rule."""
    assert increase_over(readings, at(W), AS_OF) == pytest.approx(expected)


def test_counter_increase_in_bucket_is_start_inclusive() -> None:
    """In a bucket [start, end) a reading at start is inside and one at end is not."""
    readings = samples((400, 90), (300, 100), (150, 150), (0, 1000))
    # Readings in [as_of - 300, as_of): 100, 150; baseline 90: +10 +50.
    assert increase_in_bucket(readings, at(300), AS_OF) == pytest.approx(60.0)
    # The live window (as_of - 300, as_of] takes 100 as the baseline and 1000 inside.
    assert increase_over(readings, at(300), AS_OF) == pytest.approx(900.0)


def test_adjacent_buckets_add_up() -> None:
    """Increases of adjacent buckets add up to the increase over their union."""
    readings = samples((500, 3), (420, 9), (299, 2), (250, 8), (60, 1), (10, 4))
    left = increase_in_bucket(readings, at(600), at(300))
    right = increase_in_bucket(readings, at(300), AS_OF)
    assert left + right == pytest.approx(increase_in_bucket(readings, at(600), AS_OF))


def test_step_restart_rule() -> None:
    """A drop means the counter restarted from zero, so the new value is all increase."""
    assert step(10.0, 15.0) == 5.0
    assert step(10.0, 10.0) == 0.0
    assert step(10.0, 4.0) == 4.0
