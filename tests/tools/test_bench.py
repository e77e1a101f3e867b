"""Tests of the benchmark: histogram quantiles, its report, its fleet and reading the registry."""

from __future__ import annotations

import psycopg
import pytest

from schemas.fleet import Device, DeviceType, Factory, Fleet, MetricSpec, Park, Thresholds
from services.storage.fleet_store import load_fleet, read_fleet
from tools.bench_registry import (
    BENCH_PARK,
    bench_park,
    without_bench_park,
)
from tools.bench_stats import (
    BenchReport,
    add_buckets,
    histogram_quantile,
    parse_histogram,
    quantiles_from_scrapes,
    render_markdown,
    subtract_buckets,
)

EXPOSITION = """\
# HELP lag_seconds Lag
# TYPE lag_seconds histogram
lag_seconds_bucket{le="0.1"} 10.0
lag_seconds_bucket{le="0.5"} 60.0
lag_seconds_bucket{le="1.0"} 90.0
lag_seconds_bucket{le="+Inf"} 100.0
lag_seconds_count 100.0
lag_seconds_sum 42.0
"""


def test_histogram_is_parsed_from_a_prometheus_exposition() -> None:
    """Cumulative buckets come out keyed by their upper bound, added up over other labels."""
    buckets = parse_histogram(EXPOSITION, "lag_seconds")
    assert buckets == {0.1: 10.0, 0.5: 60.0, 1.0: 90.0, float("inf"): 100.0}
    assert parse_histogram(EXPOSITION, "missing") == {}
    labelled = (
        "# TYPE lag_seconds histogram\n"
        'lag_seconds_bucket{le="1.0",path="a"} 1.0\nlag_seconds_bucket{le="+Inf",path="a"} 2.0\n'
        'lag_seconds_bucket{le="1.0",path="b"} 3.0\nlag_seconds_bucket{le="+Inf",path="b"} 4.0\n'
    )
    assert parse_histogram(labelled, "lag_seconds") == {1.0: 4.0, float("inf"): 6.0}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, 0.05),  # rank 5 of the first bucket [0, 0.1]: halfway
        (0.5, 0.1 + 0.4 * 40 / 50),  # rank 50 in (0.1, 0.5], 40 of its 50
        (0.9, 1.0),  # rank 90: the top of (0.5, 1.0]
        (0.99, 1.0),  # in the +Inf bucket: the largest finite bound
    ],
)
def test_quantile_interpolates_linearly_within_its_bucket(q: float, expected: float) -> None:
    """Quantiles follow Prometheus' histogram_quantile."""
    buckets = parse_histogram(EXPOSITION, "lag_seconds")
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_quantile_of_an_empty_histogram_is_none() -> None:
    """No observations, no estimate."""
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    with pytest.raises(ValueError, match="within"):
        histogram_quantile(1.5, {0.1: 1.0})


def test_quantiles_come_from_the_difference_of_two_scrapes_of_every_worker() -> None:
    """Observations before the run are subtracted; workers are added up."""
    before = {"ingest-1": {0.1: 100.0, 1.0: 100.0, float("inf"): 100.0}}
    after = {
        "ingest-1": {0.1: 100.0, 1.0: 150.0, float("inf"): 150.0},
        "ingest-2": {0.1: 0.0, 1.0: 50.0, float("inf"): 50.0},
    }
    assert subtract_buckets(after["ingest-1"], before["ingest-1"]) == {
        0.1: 0.0,
        1.0: 50.0,
        float("inf"): 50.0,
    }
    assert add_buckets(after.values())[1.0] == 200.0
    p50, p99, count = quantiles_from_scrapes(before, after)
    assert count == 100
    assert p50 == pytest.approx(0.1 + 0.9 * 50 / 100)
    assert p99 == pytest.approx(0.1 + 0.9 * 99 / 100)


def test_report_renders_as_markdown_tables() -> None:
    """The report is a pasteable markdown table with the machine facts and notes."""
    report = BenchReport(
        devices=1000,
        connections=4,
        samples_per_message=10,
        metrics_per_sample=3,
        duration_s=30,
        target_rate_msg_s=None,
        messages_published=100,
        messages_acked=100,
        readings_published=3000,
        publish_rate_msg_s=3.3,
        readings_stored=3000,
        latency_p50_s=0.0123,
        latency_p99_s=None,
        machine={"CPU": "test CPU, 2 cores"},
        notes=["a note"],
    )
    text = render_markdown(report)
    assert text.startswith("| measure | value |\n|---|---|\n")
    assert "| latency publish → commit p50 / p99 | 12.3 ms / n/a" in text
    assert "| CPU | test CPU, 2 cores |" in text
    assert "- a note" in text
    assert report.as_dict()["readings_stored"] == 3000


def test_bench_park_groups_devices_in_factories_of_one_hundred() -> None:
    """The bench park has the requested devices, 100 per factory, all env sensors."""
    park = bench_park(250)
    assert park.id == BENCH_PARK
    assert [len(f.devices) for f in park.factories] == [100, 100, 50]
    devices = [d for f in park.factories for d in f.devices]
    assert len({d.id for d in devices}) == 250
    assert {d.type for d in devices} == {"env_sensor"}
    fleet = Fleet(parks=[park])
    assert without_bench_park(fleet).parks == []


def test_registry_reads_back_as_the_fleet_that_was_loaded(clean_db: str) -> None:
    """read_fleet returns what load_fleet stored, custom types and overrides included."""
    gas = DeviceType(
        id="gas_meter",
        description="Gas meter",
        metrics={
            "flow_m3h": MetricSpec(
                kind="gauge", unit="m3/h", min=0, max=500, alarm=Thresholds(max=400)
            ),
            "mode": MetricSpec(kind="state", states=["on", "off"], alarm_states=["off"]),
        },
        attributes=[],
    )
    fleet = Fleet(
        device_types=[gas],
        parks=[
            Park(
                id="p1",
                name="Park One",
                city="Hebi",
                factories=[
                    Factory(
                        id="p1-f01",
                        name="F1",
                        industry="food",
                        devices=[
                            Device(id="p1-f01-gas-1", type="gas_meter"),
                            Device(
                                id="p1-f01-env-1",
                                type="env_sensor",
                                thresholds={"temp_c": Thresholds(min=5, max=35)},
                            ),
                            Device(
                                id="p1-f01-line-1",
                                type="production_line",
                                capacity_units_per_hour=1200,
                            ),
                        ],
                    ),
                    Factory(id="p1-f02"),
                ],
            ),
            Park(id="p2"),
        ],
    )
    load_fleet(clean_db, fleet)
    with psycopg.connect(clean_db) as conn:
        back = read_fleet(conn)
    assert back.device_types == fleet.device_types
    assert [p.id for p in back.parks] == ["p1", "p2"]
    factories = {f.id: f for f in back.parks[0].factories}
    assert factories["p1-f02"].devices == []
    assert sorted(factories["p1-f01"].devices, key=lambda d: d.id) == sorted(
        fleet.parks[0].factories[0].devices, key=lambda d: d.id
    )
    assert back.parks[0].name == "Park One"
    assert factories["p1-f01"].industry == "food"
