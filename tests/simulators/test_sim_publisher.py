"""Tests of the gateway publisher and the ``run`` command against a real Mosquitto broker."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from schemas.fleet import Device, Factory, Fleet, Park
from schemas.telemetry import (
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    StatusMessage,
    TelemetrySample,
    status_topic,
    telemetry_topic,
)
from services.access.sync import BrokerSync
from services.config import BrokerAuthSettings, MqttSettings
from services.core.access import PlatformRole
from services.stack.mosquitto import MosquittoBroker
from simulators.__main__ import main
from simulators.fleet import dump_fleet_yaml
from simulators.publisher import Gateway, GatewaySettings, MqttProtocol, OutageSchedule
from tests.harness import waiting
from tests.harness.environment import free_port, mqtt_client_id, platform_mqtt
from tools.bench import main as bench_main
from tools.bench_registry import BENCH_PARK

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 20.0


def wait_until(predicate: Callable[[], object], timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail the test after ``timeout_s``."""
    waiting.wait_until(predicate, timeout_s, interval_s=0.02)


def port_open(port: int) -> bool:
    """Return whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def broker(
    tmp_path: Path,
    db_conninfo: str,
    mqtt_settings: MqttSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[MosquittoBroker]:
    """Run a private Mosquitto with the platform's credentials for one test, which may stop it.

    The simulator's credential is in the environment, as the local stack gives it to the
    simulator process (and to the commands run here in-process or as children).
    """
    server = MosquittoBroker(tmp_path / "broker", free_port())
    server.write_config()
    BrokerSync(
        BrokerAuthSettings(auth_dir=server.auth_dir, pid_file=server.pid_file),
        MqttSettings(host=server.host, port=server.port),
    ).sync(db_conninfo)
    assert mqtt_settings.username is not None
    assert mqtt_settings.password is not None
    monkeypatch.setenv("PARKSENSE_MQTT_USERNAME", mqtt_settings.username)
    monkeypatch.setenv("PARKSENSE_MQTT_PASSWORD", mqtt_settings.password.get_secret_value())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A paho subscriber with a persistent session that records every message it receives."""

    def __init__(self, port: int, topic_filter: str) -> None:
        """Connect, subscribe at QoS 1 and wait for the subscription."""
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._filter = topic_filter
        reader = platform_mqtt(MqttSettings(port=port), PlatformRole.INGEST)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=mqtt_client_id(reader, f"collector-{uuid.uuid4().hex[:8]}"),
            protocol=mqtt.MQTTv5,
        )
        assert reader.password is not None
        self.client.username_pw_set(reader.username, reader.password.get_secret_value())
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()
        wait_until(self._subscribed.is_set)

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(self._filter, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self) -> list[Received]:
        """Return the messages received so far."""
        with self._lock:
            return list(self.messages)

    def telemetry(self) -> list[Received]:
        """Return the telemetry messages received so far."""
        return [m for m in self.snapshot() if m.topic.endswith("/telemetry")]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def ids() -> tuple[str, str, list[str]]:
    """Return a unique park, factory and three device ids for one test."""
    tag = uuid.uuid4().hex[:8]
    return f"p-{tag}", f"f-{tag}", [f"d-{tag}-{n}" for n in range(3)]


def samples_of(message: Received) -> list[TelemetrySample]:
    """Decode a telemetry payload (one sample or an array) with the wire contract's model."""
    raw = orjson.loads(message.payload)
    items = raw if isinstance(raw, list) else [raw]
    return [TelemetrySample.model_validate(item) for item in items]


def settings(
    port: int, *, buffer_limit: int = 1_000_000, protocol: MqttProtocol = MqttProtocol.V5
) -> GatewaySettings:
    """Return gateway settings for a test broker: quick reconnects."""
    simulator = platform_mqtt(MqttSettings(port=port), PlatformRole.SIMULATOR)
    assert simulator.password is not None
    return GatewaySettings(
        port=port,
        username=simulator.username,
        password=simulator.password.get_secret_value(),
        reconnect_min_s=1,
        reconnect_max_s=1,
        buffer_limit=buffer_limit,
        protocol=protocol,
    )


def metrics(n: int) -> dict[str, float]:
    """Return plausible env sensor metrics that differ by ``n``."""
    return {"temp_c": 20.0 + n / 100, "humidity_pct": 50.0, "pm25_ugm3": 30.0 + n % 7}


def test_gateway_publishes_valid_samples_on_device_topics_and_status(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]]
) -> None:
    """Telemetry validates as TelemetrySample on each device's topic; status goes on and off."""
    park, factory, devices = ids
    collector = Collector(broker.port, f"parksense/v1/{park}/#")
    gateway = Gateway(park, factory, devices, settings(broker.port))
    try:
        gateway.start()
        assert gateway.wait_connected(TIMEOUT_S)
        ts = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
        for tick in range(3):
            gateway.submit(ts + timedelta(seconds=5 * tick), [(d, metrics(tick)) for d in devices])
        wait_until(lambda: len(collector.telemetry()) == 9)
        assert gateway.stop() == 0
        wait_until(lambda: len(collector.snapshot()) == 9 + 2 * len(devices))
    finally:
        collector.close()
    received = collector.snapshot()
    for device in devices:
        telemetry = [m for m in received if m.topic == telemetry_topic(park, factory, device)]
        decoded = [s for m in telemetry for s in samples_of(m)]
        assert [s.seq for s in decoded] == [0, 1, 2]
        assert [s.ts for s in decoded] == [ts + timedelta(seconds=5 * t) for t in range(3)]
        assert decoded[1].metrics == metrics(1)
        statuses = [
            StatusMessage.model_validate_json(m.payload)
            for m in received
            if m.topic == status_topic(park, factory, device)
        ]
        assert [s.online for s in statuses] == [True, False]
    assert all(m.topic.endswith(("/telemetry", "/status")) for m in received)


def test_retained_status_tells_a_late_subscriber_the_device_is_online(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]]
) -> None:
    """Each device's online status is retained, so a subscriber that comes later still sees it."""
    park, factory, devices = ids
    gateway = Gateway(park, factory, devices, settings(broker.port, protocol=MqttProtocol.V311))
    try:
        gateway.start()
        assert gateway.wait_connected(TIMEOUT_S)
        wait_until(lambda: gateway.stats().acked_messages >= len(devices))
        collector = Collector(broker.port, f"parksense/v1/{park}/+/+/status")
        try:
            wait_until(lambda: len(collector.snapshot()) == len(devices))
        finally:
            collector.close()
    finally:
        gateway.stop()
    statuses = collector.snapshot()
    assert all(m.retain for m in statuses)
    assert all(StatusMessage.model_validate_json(m.payload).online for m in statuses)


def test_samples_buffered_while_the_broker_is_down_arrive_as_arrays_after_it_returns(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]]
) -> None:
    """Store-and-forward: samples made during a broker outage are flushed as arrays, in order."""
    park, factory, devices = ids
    collector = Collector(broker.port, f"parksense/v1/{park}/+/+/telemetry")
    gateway = Gateway(park, factory, devices, settings(broker.port))
    ticks = 1200  # over 1000 samples and over 64 KiB per device: the flush must split
    start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    try:
        gateway.start()
        assert gateway.wait_connected(TIMEOUT_S)
        broker.stop()
        wait_until(lambda: not gateway.stats().connected)
        for tick in range(ticks):
            gateway.submit(start + timedelta(seconds=tick), [(d, metrics(tick)) for d in devices])
        assert gateway.stats().buffered == ticks * len(devices)
        broker.start()
        wait_until(lambda: gateway.stats().buffered == 0)
        total = ticks * len(devices)
        wait_until(lambda: sum(len(samples_of(m)) for m in collector.telemetry()) == total)
    finally:
        gateway.stop()
        collector.close()
    assert gateway.stats().flushed_messages > 0
    for device in devices:
        messages = [m for m in collector.telemetry() if m.topic.endswith(f"/{device}/telemetry")]
        assert all(orjson.loads(m.payload).__class__ is list for m in messages)
        assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in messages)
        assert all(len(samples_of(m)) <= MAX_SAMPLES_PER_MESSAGE for m in messages)
        assert len(messages) > 2
        decoded = [s for m in messages for s in samples_of(m)]
        assert [s.seq for s in decoded] == list(range(ticks))


def test_simulated_outage_buffers_then_flushes_arrays(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]]
) -> None:
    """During a scheduled outage nothing is sent; afterwards the backlog arrives as arrays."""
    park, factory, devices = ids
    now = [0.0]
    outage = OutageSchedule(every_s=100, duration_s=30)  # out from 70 s to 100 s
    collector = Collector(broker.port, f"parksense/v1/{park}/+/+/telemetry")
    gateway = Gateway(
        park, factory, devices, settings(broker.port), outage=outage, clock=lambda: now[0]
    )
    ts = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    try:
        gateway.start()
        assert gateway.wait_connected(TIMEOUT_S)
        now[0] = 75.0
        assert gateway.stats().in_outage
        for tick in range(4):
            gateway.submit(ts + timedelta(seconds=tick), [(d, metrics(tick)) for d in devices])
        assert gateway.stats().buffered == 4 * len(devices)
        assert gateway.stats().telemetry_messages == 0
        now[0] = 101.0
        gateway.submit(ts + timedelta(seconds=4), [(d, metrics(4)) for d in devices])
        wait_until(lambda: len(collector.telemetry()) == len(devices))
    finally:
        gateway.stop()
        collector.close()
    for message in collector.telemetry():
        assert [s.seq for s in samples_of(message)] == [0, 1, 2, 3, 4]


def test_buffer_is_bounded_and_drops_the_oldest_samples(ids: tuple[str, str, list[str]]) -> None:
    """With no broker, the buffer keeps its newest samples up to its limit and counts the rest."""
    park, factory, devices = ids
    gateway = Gateway(park, factory, devices[:2], settings(free_port(), buffer_limit=5))
    try:
        gateway.start()
        for tick in range(3):
            gateway.submit(tick, [(d, metrics(tick)) for d in devices[:2]])
        stats = gateway.stats()
    finally:
        lost = gateway.stop(timeout_s=0.1)
    assert (stats.buffered, stats.dropped, stats.telemetry_messages) == (5, 1, 0)
    assert lost == 5


def test_gateway_refuses_a_device_it_does_not_serve(ids: tuple[str, str, list[str]]) -> None:
    """Submitting a sample for a foreign device is an error."""
    park, factory, devices = ids
    gateway = Gateway(park, factory, devices, settings(free_port()))
    with pytest.raises(ValueError, match="not behind gateway"):
        gateway.submit(0, [("someone-else", {"x": 1})])


def small_fleet(park: str, factory: str) -> Fleet:
    """Return a fleet of one factory with one device of each type."""
    devices = [
        Device(id=f"{factory}-meter-1", type="power_meter"),
        Device(id=f"{factory}-line-1", type="production_line", capacity_units_per_hour=600),
        Device(id=f"{factory}-env-1", type="env_sensor"),
        Device(id=f"{factory}-mach-1", type="machine"),
    ]
    return Fleet(parks=[Park(id=park, factories=[Factory(id=factory, devices=devices)])])


def test_run_command_publishes_every_device_of_the_fleet(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    """``run --duration-s`` publishes valid samples for every device, then exits with 0."""
    park, factory, _ = ids
    fleet = small_fleet(park, factory)
    path = tmp_path / "fleet.yaml"
    path.write_text(dump_fleet_yaml(fleet), encoding="utf-8")
    collector = Collector(broker.port, f"parksense/v1/{park}/#")
    try:
        argv = ["run", "--fleet", str(path), "--port", str(broker.port), "--interval-s", "0.2"]
        assert (
            main([*argv, "--duration-s", "1", "--client-id-prefix", f"parksense.simulator.{park}-"])
            == 0
        )
    finally:
        collector.close()
    devices = {d.id for d in fleet.parks[0].factories[0].devices}
    telemetry = collector.telemetry()
    assert {m.topic.split("/")[-2] for m in telemetry} == devices
    for message in telemetry:
        stamps = [s.ts for s in samples_of(message)]
        assert all(isinstance(ts, datetime) and ts <= datetime.now(UTC) for ts in stamps)


def test_run_command_replays_history_with_a_speedup(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    """With --speedup, the first samples lie --backfill-s in the past and none in the future."""
    park, factory, _ = ids
    path = tmp_path / "fleet.yaml"
    path.write_text(dump_fleet_yaml(small_fleet(park, factory)), encoding="utf-8")
    collector = Collector(broker.port, f"parksense/v1/{park}/+/+/telemetry")
    started = datetime.now(UTC)
    try:
        argv = ["run", "--fleet", str(path), "--port", str(broker.port), "--interval-s", "60"]
        argv += ["--speedup", "3600", "--backfill-s", "7200", "--duration-s", "1"]
        assert main([*argv, "--client-id-prefix", f"parksense.simulator.{park}-"]) == 0
    finally:
        collector.close()
    stamps = sorted(s.ts for m in collector.telemetry() for s in samples_of(m))
    assert isinstance(stamps[0], datetime)
    assert stamps[0] <= started - timedelta(seconds=7100)
    assert all(isinstance(ts, datetime) and ts <= datetime.now(UTC) for ts in stamps)


def test_sigterm_publishes_offline_status_and_exits_cleanly(
    broker: MosquittoBroker, ids: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    """On SIGTERM the simulator marks every device offline, disconnects and exits with 0."""
    park, factory, _ = ids
    fleet = small_fleet(park, factory)
    path = tmp_path / "fleet.yaml"
    path.write_text(dump_fleet_yaml(fleet), encoding="utf-8")
    collector = Collector(broker.port, f"parksense/v1/{park}/#")
    argv = [sys.executable, "-m", "simulators", "run", "--fleet", str(path)]
    argv += [
        "--port",
        str(broker.port),
        "--interval-s",
        "0.5",
        "--client-id-prefix",
        f"parksense.simulator.{park}-",
    ]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(collector.telemetry()) >= 4)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        collector.close()
    assert process.returncode == 0, output.decode()
    assert b"done: published" in output
    offline = {
        m.topic.split("/")[-2]
        for m in collector.snapshot()
        if m.topic.endswith("/status") and not StatusMessage.model_validate_json(m.payload).online
    }
    assert offline == {d.id for d in fleet.parks[0].factories[0].devices}


def test_bench_publish_only_reports_what_the_broker_acknowledged(
    broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench --publish-only`` sends valid batches at QoS 1 and reports them as JSON."""
    collector = Collector(broker.port, f"parksense/v1/{BENCH_PARK}/+/+/telemetry")
    try:
        argv = ["--publish-only", "--port", str(broker.port), "--duration-s", "0.5"]
        argv += ["--rate", "400"]
        assert bench_main([*argv, "--devices", "20", "--connections", "2", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        wait_until(lambda: len(collector.telemetry()) == report["messages_acked"])
    finally:
        collector.close()
    assert report["messages_acked"] == report["messages_published"] > 0
    assert report["readings_published"] == report["messages_acked"] * 10 * 3
    by_device: dict[str, list[TelemetrySample]] = {}
    for message in collector.telemetry():
        samples = samples_of(message)
        assert len(samples) == 10
        by_device.setdefault(message.topic, []).extend(samples)
    assert len(by_device) == 20
    for samples in by_device.values():
        stamps = [s.ts for s in samples]
        assert all(isinstance(ts, int) for ts in stamps)
        assert stamps == sorted(set(stamps))  # unique per device: no reading is a duplicate
