"""Property: roll-ups and what is computed from them equal the definitions on raw readings.

Random readings are written in random batches, out of order and partly twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from schemas.fleet import parse_fleet
from services.core.alarms import MetricValue
from services.core.counters import CounterSample, increase, increase_in_bucket, increase_over
from services.core.history import (
    Bucket,
    BucketSignals,
    BucketSlot,
    MinuteTotals,
    RegistryCounts,
    bucket_signals,
    registry_counts,
)
from services.core.readings import Reading
from services.core.registry import DeviceEntry, registry_from_fleet
from services.core.signals import DeviceObservation, ParkSignals, park_signals
from services.storage import history_queries, signal_queries
from services.storage.fleet_store import load_fleet
from services.storage.registry import read_registry
from services.storage.rollups import FoldResult
from tests.harness.storage import QUARTERS_OF_MINUTES, fold_now, rows, write_batches

D0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
# Readings fall in the first 10 minutes (crowded minutes, much late data) or the first
# 150 (several hours, so history reads whole hours too).
SPANS_MIN = (10, 150)
MINUTE = timedelta(minutes=1)

FLEET = """
parks:
  - id: p1
    city: Anyang
    factories:
      - id: f1
        devices:
          - {id: m1, type: power_meter}
          - {id: l1, type: production_line, capacity_units_per_hour: 600}
          - {id: e1, type: env_sensor, thresholds: {temp_c: {max: 30}}}
      - id: f2
        devices:
          - {id: l2, type: production_line, capacity_units_per_hour: 300}
          - {id: x1, type: machine}
"""
DEVICES: dict[str, DeviceEntry] = dict(registry_from_fleet(parse_fleet(FLEET)).devices)
REGISTRY = RegistryCounts(
    devices=5,
    factories_with_lines=2,
    lines=2,
    line_capacity_units_per_hour=900.0,
    meters=1,
    energy_devices=1,
    alarm_devices=4,  # l1, l2 and x1 (state), e1 (thresholds)
)

# (device, metric, kind, value strategy): counters take small integers so that they
# restart often; gauges cross their alarm thresholds.
METRICS: list[tuple[str, str, str, st.SearchStrategy[Any]]] = [
    ("m1", "power_kw", "gauge", st.integers(0, 500).map(float)),
    ("m1", "energy_kwh", "counter", st.integers(0, 40).map(float)),
    ("l1", "state", "state", st.sampled_from(["running", "idle", "fault", "stopped"])),
    ("l1", "output_units", "counter", st.integers(0, 40).map(float)),
    ("l2", "state", "state", st.sampled_from(["running", "idle", "fault"])),
    ("l2", "output_units", "counter", st.integers(0, 40).map(float)),
    ("e1", "temp_c", "gauge", st.integers(-5, 45).map(float)),
    ("x1", "vibration_mm_s", "gauge", st.sampled_from([1.0, 7.1, 7.2, 12.0])),
    ("x1", "state", "state", st.sampled_from(["running", "fault"])),
]


# The metrics that can put their device in alarm: states, and gauges with thresholds.
ALARMABLE = {
    ("l1", "state"),
    ("l2", "state"),
    ("x1", "state"),
    ("x1", "vibration_mm_s"),
    ("e1", "temp_c"),
}


@dataclass(frozen=True)
class Raw:
    """One generated reading."""

    device: str
    metric: str
    kind: str
    ts: datetime
    value: Any

    def reading(self) -> Reading:
        """As ingest hands it to the writer."""
        if self.kind == "state":
            return Reading(self.device, self.metric, self.ts, None, self.value, self.ts)
        return Reading(self.device, self.metric, self.ts, self.value, None, self.ts)


@st.composite
def raw_readings(draw: st.DrawFn, span_min: int) -> list[Raw]:
    """Readings at distinct (device, metric, ts), clustered so minutes get several each."""
    out: dict[tuple[str, str, datetime], Raw] = {}
    for _ in range(draw(st.integers(1, 60))):
        device, metric, kind, values = draw(st.sampled_from(METRICS))
        ms = draw(st.integers(0, span_min * 60_000 - 1))
        ts = D0 + timedelta(milliseconds=ms)
        out[(device, metric, ts)] = Raw(device, metric, kind, ts, draw(values))
    return list(out.values())


@st.composite
def ordered_deliveries(draw: st.DrawFn, readings: list[Raw]) -> list[list[Raw]]:
    """The readings in time order, in random batches, each maybe resending earlier ones."""
    order = sorted(readings, key=lambda r: r.ts)
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=6)))
    batches = []
    for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True):
        again = draw(st.lists(st.sampled_from(order[:a]), max_size=5)) if a else []
        batches.append(again + list(order[a:b]))
    return [b for b in batches if b]


@st.composite
def deliveries(draw: st.DrawFn, readings: list[Raw]) -> list[list[Raw]]:
    """The readings in random order and batches, some delivered twice."""
    order = draw(st.permutations(readings))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=5)))
    batches = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    again = draw(st.lists(st.sampled_from(order), max_size=10)) if order else []
    return [b for b in batches if b] + ([again] if again else [])


def truncate(conninfo: str) -> None:
    """Empty the data tables, keeping the registry."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE readings, readings_1m, readings_15m, park_1m, park_1h, park_metric_1m,"
            " rollup_dirty,"
            " device_latest,"
            " device_status, device_status_events, device_availability, availability_dirty"
        )


def minute_of(ts: datetime) -> datetime:
    """The minute holding ts."""
    return ts.replace(second=0, microsecond=0)


def series(readings: Sequence[Raw]) -> dict[tuple[str, str], list[Raw]]:
    """Readings per (device, metric), sorted by time."""
    out: dict[tuple[str, str], list[Raw]] = defaultdict(list)
    for r in sorted(readings, key=lambda r: r.ts):
        out[(r.device, r.metric)].append(r)
    return out


def expected_minute_rows(
    readings: Sequence[Raw],
) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    """readings_1m by definition, from raw readings."""
    rows = {}
    for (device, metric), points in series(readings).items():
        by_minute: dict[datetime, list[Raw]] = defaultdict(list)
        for p in points:
            by_minute[minute_of(p.ts)].append(p)
        previous: Raw | None = None
        for minute in sorted(by_minute):
            inside = by_minute[minute]
            row: dict[str, Any] = {
                "n": len(inside),
                "first_ts": inside[0].ts,
                "last_ts": inside[-1].ts,
            }
            if inside[0].kind == "state":
                counts: dict[str, int] = defaultdict(int)
                for p in inside:
                    counts[p.value] += 1
                row |= {"first_text": inside[0].value, "last_text": inside[-1].value}
                row |= {"state_counts": dict(counts), "sum": None}
            else:
                values = [p.value for p in inside]
                row |= {"sum": pytest.approx(sum(values)), "min": min(values), "max": max(values)}
                row |= {"first_value": values[0], "last_value": values[-1]}
            if inside[0].kind == "counter":
                samples = [CounterSample(p.ts, p.value) for p in inside]
                row["inc_within"] = pytest.approx(increase(samples))
                row["inc_from_prev"] = (
                    None
                    if previous is None
                    else pytest.approx(
                        increase([CounterSample(previous.ts, previous.value), samples[0]])
                    )
                )
            rows[(device, metric, minute)] = row
            previous = inside[-1]
    return rows


def expected_park_metric_rows(
    readings: Sequence[Raw],
) -> dict[tuple[str, datetime], dict[str, Any]]:
    """park_metric_1m of p1 by definition, from raw readings."""
    by_series = series(readings)
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    keys = {(r.metric, minute_of(r.ts)) for r in readings}
    for metric, minute in keys:
        inside = [r for r in readings if r.metric == metric and minute_of(r.ts) == minute]
        devices = sorted({r.device for r in inside})
        kind = inside[0].kind
        row: dict[str, Any] = {"devices": len(devices), "n": len(inside)}
        if kind == "state":
            counts: dict[str, int] = defaultdict(int)
            for r in inside:
                counts[r.value] += 1
            row["state_counts"] = dict(counts)
        else:
            values = [r.value for r in inside]
            means = [
                sum(r.value for r in inside if r.device == d)
                / sum(1 for r in inside if r.device == d)
                for d in devices
            ]
            row |= {"sum": pytest.approx(sum(values)), "min": min(values), "max": max(values)}
            row["mean_sum"] = pytest.approx(sum(means))
        if kind == "counter":
            row["increase"] = pytest.approx(
                sum(
                    increase_in_bucket(
                        [CounterSample(p.ts, p.value) for p in by_series[(d, metric)]],
                        minute,
                        minute + MINUTE,
                    )
                    for d in devices
                )
            )
        rows[(metric, minute)] = row
    return rows


def alarm(device: str, metric: str, value: Any) -> bool:
    """Whether a value is an alarm, by the device's rules (its own thresholds first)."""
    rule = DEVICES[device].metrics[metric]
    if rule.kind.value == "state":
        return value == "fault" or value in rule.alarm_states
    if rule.kind.value != "gauge":
        return False
    return (rule.alarm_min is not None and value < rule.alarm_min) or (
        rule.alarm_max is not None and value > rule.alarm_max
    )


def expected_sums(readings: Sequence[Raw], start: datetime, end: datetime) -> MinuteTotals:
    """The sums behind a bucket [start, end), by definition from raw readings."""
    by_series = series(readings)
    sums = MinuteTotals()
    minute = start
    while minute < end:
        inside = [r for r in readings if minute <= r.ts < minute + MINUTE]
        last: dict[tuple[str, str], Raw] = {}
        for r in sorted(inside, key=lambda r: r.ts):
            last[(r.device, r.metric)] = r
        reporting = {r.device for r in inside}
        running = {
            d
            for (d, m), r in last.items()
            if d in ("l1", "l2") and m == "state" and r.value == "running"
        }
        power = [r.value for r in inside if r.metric == "power_kw"]
        sums += MinuteTotals(
            devices_reporting=len(reporting),
            lines_reporting_state=sum((d, "state") in last for d in ("l1", "l2")),
            lines_running=len(running),
            factories_operating=len({DEVICES[d].factory_id for d in running}),
            lines_reporting_output=sum((d, "output_units") in last for d in ("l1", "l2")),
            meters_reporting_power=int(bool(power)),
            power_kw=sum(power) / len(power) if power else 0.0,
            energy_reporting=int(("m1", "energy_kwh") in last),
            alarm_devices_reporting=len({d for d, m in last if (d, m) in ALARMABLE}),
            devices_in_alarm=len({d for (d, m), r in last.items() if alarm(d, m, r.value)}),
        )
        minute += MINUTE

    def bucket_increase(key: tuple[str, str]) -> float:
        points = [CounterSample(r.ts, r.value) for r in by_series.get(key, [])]
        return increase_in_bucket(points, start, end)

    return sums + MinuteTotals(
        output_units=bucket_increase(("l1", "output_units"))
        + bucket_increase(("l2", "output_units")),
        energy_kwh=bucket_increase(("m1", "energy_kwh")),
    )


def expected_observation(
    readings: Sequence[Raw], device: str, as_of: datetime, window_s: float
) -> DeviceObservation:
    """What the live signals know about a device at as_of, by definition from raw readings."""
    start = as_of - timedelta(seconds=window_s)
    latest: dict[str, MetricValue] = {}
    increases = {}
    for (d, metric), points in series(readings).items():
        if d != device:
            continue
        before = [p for p in points if p.ts <= as_of]
        if before:
            p = before[-1]
            latest[metric] = (
                MetricValue(ts=p.ts, text=p.value)
                if p.kind == "state"
                else MetricValue(ts=p.ts, value=p.value)
            )
        if points[0].kind == "counter":
            increases[metric] = increase_over(
                [CounterSample(p.ts, p.value) for p in points], start, as_of
            )
    for metric, rule in DEVICES[device].metrics.items():
        if rule.kind.value == "counter":
            increases.setdefault(metric, 0.0)
    return DeviceObservation(
        device=DEVICES[device],
        last_reading_ts=max((v.ts for v in latest.values()), default=None),
        latest=latest,
        increases=increases,
        window_metrics=frozenset(m for m, v in latest.items() if v.ts > start),
    )


@pytest.fixture(scope="module")
def fleet_db(db_conninfo: str) -> str:
    """The test database with this module's fleet (other tests truncate it themselves)."""
    load_fleet(db_conninfo, parse_fleet(FLEET))
    return db_conninfo


Q15 = "SELECT * FROM readings_15m ORDER BY 1, 2, 3"


def check_stored_rows(conninfo: str, readings: Sequence[Raw]) -> None:
    """readings_1m and park_metric_1m hold, row by row, what the raw readings define."""
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM readings_1m")
        stored = {(r["device_id"], r["metric"], r["minute"]): r for r in cur.fetchall()}
        cur.execute("SELECT * FROM park_metric_1m WHERE park_id = 'p1'")
        park_rows = {(r["metric"], r["minute"]): r for r in cur.fetchall()}
    expected = expected_minute_rows(readings)
    assert stored.keys() == expected.keys()
    for key, want in expected.items():
        assert {name: stored[key][name] for name in want} == want, key
    # readings_15m: each quarter the sums of its minutes (merged fold by fold, or summed).
    quarters = {(q["device_id"], q["metric"], q["quarter"]): q for q in rows(conninfo, Q15)}
    want_quarters = {
        (q["device_id"], q["metric"], q["quarter"]): q for q in rows(conninfo, QUARTERS_OF_MINUTES)
    }
    assert quarters.keys() == want_quarters.keys()
    for key, want_quarter in want_quarters.items():
        got_quarter = dict(quarters[key])
        got_sum, want_sum = got_quarter.pop("sum"), dict(want_quarter).pop("sum")
        assert got_quarter == {k: v for k, v in want_quarter.items() if k != "sum"}, key
        assert got_sum == (None if want_sum is None else pytest.approx(want_sum)), key
    expected_park = expected_park_metric_rows(readings)
    assert park_rows.keys() == expected_park.keys()
    for park_key, park_want in expected_park.items():
        assert {name: park_rows[park_key][name] for name in park_want} == park_want, park_key


def check_history(history: Sequence[BucketSignals], readings: Sequence[Raw]) -> None:
    """History buckets from the roll-ups equal the definitions applied to raw readings."""
    for got in history:
        slot = got.slot
        want = bucket_signals(
            BucketSlot(slot.ts, slot.start, slot.end),
            expected_sums(readings, slot.start, slot.end),
            REGISTRY,
        )
        for name in MinuteTotals.__dataclass_fields__:
            assert getattr(got.sums, name) == pytest.approx(getattr(want.sums, name)), (slot, name)
        assert got.signals.health_index == pytest.approx(want.signals.health_index, abs=0.1)
        for name in SIGNAL_NAMES:
            assert getattr(got.signals, name) == pytest.approx(getattr(want.signals, name)), name


SIGNAL_NAMES = (
    "online_rate",
    "operating_rate",
    "capacity_utilization",
    "power_kw",
    "energy_kwh",
    "alarm_rate",
)


def check_live(
    increases: dict[tuple[str, str], float],
    live: ParkSignals,
    readings: Sequence[Raw],
    as_of: datetime,
    window_s: float,
) -> None:
    """Live increases and signals equal the rule applied to raw readings."""
    by_series = series(readings)
    start = as_of - timedelta(seconds=window_s)
    for device, metric, kind, _ in METRICS:
        if kind == "counter":
            points = [CounterSample(p.ts, p.value) for p in by_series.get((device, metric), [])]
            want = increase_over(points, start, as_of)
            assert increases.get((device, metric), 0.0) == pytest.approx(want), (device, metric)
    observations = [expected_observation(readings, d, as_of, window_s) for d in sorted(DEVICES)]
    want_live = park_signals(observations, as_of=as_of, window_s=window_s, online_timeout_s=90)
    assert live.counts == want_live.counts
    assert live.signals.health_index == want_live.signals.health_index
    assert live.coverage == want_live.coverage


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_rollups_and_history_equal_the_definitions_on_raw_readings(
    fleet_db: str, data: st.DataObject
) -> None:
    """Roll-ups, history, live increases and signals match raw definitions, folded or not."""
    truncate(fleet_db)
    span_min = data.draw(st.sampled_from(SPANS_MIN), label="span")
    readings = data.draw(raw_readings(span_min), label="readings")
    batches = [[r.reading() for r in b] for b in data.draw(deliveries(readings), label="batches")]
    fold_every = data.draw(st.integers(1, 3), label="fold every")
    # The last batches are committed but not folded yet when live signals are first read.
    held = data.draw(st.integers(0, len(batches)), label="unfolded batches")
    folded, unfolded = batches[: len(batches) - held], batches[len(batches) - held :]
    results = write_batches(fleet_db, folded, fold_every=fold_every)
    results += write_batches(fleet_db, unfolded, fold_every=len(batches) + 1, fold_at_end=False)
    assert sum(r.inserted for r in results) == len(readings)  # duplicates never inserted

    buckets = list(Bucket)
    bucket = data.draw(st.sampled_from(buckets), label="bucket")
    first = data.draw(st.integers(0, span_min - 1), label="start minute")
    last = data.draw(st.integers(first + 1, span_min), label="end minute")
    start, end = D0 + first * MINUTE, D0 + last * MINUTE
    as_of = D0 + timedelta(milliseconds=data.draw(st.integers(0, span_min * 60_000 + 120_000)))
    window_s = float(data.draw(st.sampled_from([10, 45, 60, 150, 300, 600])))

    async def query() -> tuple[list[BucketSignals], dict[tuple[str, str], float], ParkSignals]:
        async with await psycopg.AsyncConnection.connect(fleet_db) as conn:
            park = (await read_registry(conn)).park("p1")
            assert park is not None
            assert registry_counts(park) == REGISTRY
            history = await history_queries.park_history(
                conn, park, start=start, end=end, bucket=bucket
            )
            window_start = as_of - timedelta(seconds=window_s)
            increases = await signal_queries.counter_increases(conn, ["p1"], window_start, as_of)
            [live] = await signal_queries.live_signals(
                conn, [park], as_of=as_of, window_s=window_s, online_timeout_s=90
            )
            return history, increases, live

    # Before the fold has reached the last batches, live signals read them raw.
    _, increases, live = asyncio.run(query())
    check_live(increases, live, readings, as_of, window_s)
    fold_now(fleet_db)
    check_stored_rows(fleet_db, readings)
    history, increases, live = asyncio.run(query())
    check_history(history, readings)
    check_live(increases, live, readings, as_of, window_s)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_batches_in_time_order_are_merged_from_their_pieces_exactly(
    fleet_db: str, data: st.DataObject
) -> None:
    """Readings arriving in time order (some twice) fold from pieces alone, equal to raw."""
    truncate(fleet_db)
    readings = data.draw(raw_readings(data.draw(st.sampled_from(SPANS_MIN))), label="readings")
    batches = [[r.reading() for r in b] for b in data.draw(ordered_deliveries(readings))]
    folds: list[FoldResult] = []
    results = write_batches(fleet_db, batches, fold_every=data.draw(st.integers(1, 3)), folds=folds)
    assert sum(r.inserted for r in results) == len(readings)
    assert sum(f.recomputed for f in folds) == 0
    assert sum(f.merged for f in folds) >= len(
        {(r.device, r.metric, minute_of(r.ts)) for r in readings}
    )
    check_stored_rows(fleet_db, readings)
