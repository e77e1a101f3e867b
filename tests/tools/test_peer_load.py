"""Tests of issue 10's load as bench-peers builds it."""

from __future__ import annotations

import orjson

from schemas.fleet import MetricKind, parse_fleet
from schemas.telemetry import TelemetrySample
from tools.mqtt_packets import PacketReader
from tools.peer_load import (
    DEVICE_TYPE,
    METRICS,
    LoadWindow,
    bench_fleet,
    device_topics,
    message_packets,
    paced_packets,
    sample,
)


def test_fleet_spreads_200_devices_over_4_parks_and_20_factories():
    """The bench fleet has 4 parks x 5 factories holding 10 devices each, one custom type."""
    fleet = bench_fleet()
    factories = [f for p in fleet.parks for f in p.factories]
    assert len(fleet.parks) == 4
    assert len(factories) == 20
    assert {len(f.devices) for f in factories} == {10}
    assert {d.type for f in factories for d in f.devices} == {DEVICE_TYPE}


def test_device_type_has_the_five_metrics_of_issue_10():
    """The custom device type has two gauges and a state besides two counters."""
    [kind] = bench_fleet().device_types
    assert tuple(kind.metrics) == METRICS
    assert kind.metrics["energy_kwh"].kind is MetricKind.COUNTER
    assert kind.metrics["output_units"].kind is MetricKind.COUNTER
    assert kind.metrics["state"].kind is MetricKind.STATE


def test_fleet_round_trips_through_the_fleet_file_parser():
    """The fleet is a valid fleet file, custom device type included."""
    fleet = bench_fleet()
    assert parse_fleet(orjson.dumps(fleet.model_dump(mode="json"))) == fleet


def test_messages_go_round_robin_one_per_device_per_simulated_second():
    """Message i goes to device i mod 200 at second i div 200 of the window."""
    devices = 200
    assert sample(0, devices, 1000)[:2] == (0, 1000)
    assert sample(199, devices, 1000)[:2] == (199, 1000)
    assert sample(200, devices, 1000)[:2] == (0, 2000)


def test_every_payload_is_a_valid_sample_with_all_five_metrics():
    """Payloads follow the telemetry contract and carry the five metrics."""
    for i in (0, 1, 12_345):
        _, _, body = sample(i, 200, 1_700_000_000_000)
        parsed = TelemetrySample.model_validate(body)
        assert set(parsed.metrics) == set(METRICS)


def test_counters_never_decrease_for_a_device():
    """A device's counters only grow over its messages."""
    values = [sample(i, 200, 0)[2]["metrics"] for i in range(3, 20_000, 200)]
    for name in ("energy_kwh", "output_units"):
        series = [v[name] for v in values]  # type: ignore[index]
        assert series == sorted(series)


def test_packets_carry_the_topic_in_the_json_only_for_the_peer():
    """The peer's payload adds "topic"; parksense's does not; both are on the device topic."""
    fleet = bench_fleet()
    topics = device_topics(fleet)
    window = LoadWindow(start_ms=1_700_000_000_000, count=3, devices=len(topics))
    for with_topic in (False, True):
        packets = message_packets(topics, window, with_topic=with_topic)
        assert len(packets) == 3
        body = PacketReader().feed(packets[1])[0].body
        topic_length = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + topic_length].decode()
        payload = orjson.loads(body[4 + topic_length :])
        assert topic == topics[1]
        assert ("topic" in payload) is with_topic
        if with_topic:
            assert payload["topic"] == topic


def test_window_covers_whole_simulated_seconds():
    """A window of 300,000 messages over 200 devices spans 1,500 simulated seconds."""
    window = LoadWindow(start_ms=0, count=300_000, devices=200)
    assert window.simulated_s == 1500
    assert window.end_ms == 1_500_000
    assert LoadWindow(start_ms=0, count=201, devices=200).simulated_s == 2


def test_paced_messages_are_measured_when_they_are_published():
    """Paced message i carries ts = start + i / rate, on device i mod 200's topic."""
    topics = device_topics(bench_fleet())
    packets = paced_packets(topics, 1_700_000_000_000, 401, rate_per_s=400.0)
    stamps = []
    for i in (0, 1, 400):
        body = PacketReader().feed(packets[i])[0].body
        topic_length = int.from_bytes(body[:2], "big")
        assert body[2 : 2 + topic_length].decode() == topics[i % len(topics)]
        stamps.append(orjson.loads(body[4 + topic_length :])["ts"])
    assert stamps == [1_700_000_000_000, 1_700_000_000_002, 1_700_000_001_000]
