"""Test harness for ingest: a real ingest process, real publishers, and exact accounting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from schemas.fleet import parse_fleet
from services.config import DatabaseSettings, MqttSettings
from services.core.access import PlatformRole
from services.core.assignment import factory_owner
from services.stack.stack import settings_env
from services.storage.fleet_store import load_fleet
from tests.harness.environment import free_port, mqtt_client_id, platform_mqtt
from tests.harness.waiting import wait_until

Row = tuple[str, str, datetime, float]

REPO = Path(__file__).resolve().parents[2]
# What a worker logs once the broker has answered all its subscriptions.
SUBSCRIBED_LINE = "Subscribed as worker"
# ParksFleet tries at most this many park ids (hashing gives each worker one in a few).
_MAX_PARK_CANDIDATES = 10_000


def unique_prefix() -> str:
    """A fresh id prefix, so tests never see each other's devices."""
    return "t" + uuid.uuid4().hex[:8]


@dataclass
class LoadFleet:
    """A one-park fleet of env sensors (three gauges each) with unique ids."""

    prefix: str
    devices: int = 20
    park: str = field(init=False)
    factory: str = field(init=False)

    def __post_init__(self) -> None:
        """Derive the park and factory ids."""
        self.park = f"{self.prefix}-park"
        self.factory = f"{self.prefix}-f1"

    @property
    def device_ids(self) -> list[str]:
        """Device ids in order."""
        return [f"{self.prefix}-d{i:03d}" for i in range(self.devices)]

    def yaml(self) -> str:
        """The fleet file."""
        lines = [
            "parks:",
            f"  - id: {self.park}",
            "    city: Testville",
            "    factories:",
            f"      - id: {self.factory}",
            "        devices:",
        ]
        lines += [f"          - {{id: {d}, type: env_sensor}}" for d in self.device_ids]
        return "\n".join(lines) + "\n"

    def load(self, conninfo: str) -> int:
        """Load the fleet; return its version."""
        return load_fleet(conninfo, parse_fleet(self.yaml())).version

    def topic(self, device_id: str, channel: str = "telemetry") -> str:
        """The device's topic."""
        return f"parksense/v1/{self.park}/{self.factory}/{device_id}/{channel}"


@dataclass
class ParksFleet(LoadFleet):
    """Env sensors over several parks, chosen so that each of ``workers`` owns some.

    Parks of one factory each are taken in order from ``{prefix}-p0``, ``{prefix}-p1``, …
    as long as the owner of their factory (``services.core.assignment.factory_owner``)
    has fewer than ``parks_per_worker``; devices are dealt round-robin over the parks.
    """

    workers: int = 2
    parks_per_worker: int = 2
    park_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        """Pick the parks."""
        super().__post_init__()
        taken: dict[int, int] = dict.fromkeys(range(1, self.workers + 1), 0)
        self.park_ids = []
        candidate = 0
        while min(taken.values()) < self.parks_per_worker:
            assert candidate < _MAX_PARK_CANDIDATES, "no fair split found"
            park = f"{self.prefix}-p{candidate}"
            candidate += 1
            owner = factory_owner((park, self.factory_of(park)), self.workers)
            if taken[owner] < self.parks_per_worker:
                taken[owner] += 1
                self.park_ids.append(park)
        self.park = self.park_ids[0]

    def park_of(self, device_id: str) -> str:
        """The park a device is registered in."""
        return self.park_ids[self.device_ids.index(device_id) % len(self.park_ids)]

    def factory_of(self, park_id: str) -> str:
        """The one factory of a park."""
        return f"{park_id}-f1"

    def yaml(self) -> str:
        """The fleet file."""
        lines = ["parks:"]
        for park in self.park_ids:
            lines += [
                f"  - id: {park}",
                "    city: Testville",
                "    factories:",
                f"      - id: {self.factory_of(park)}",
                "        devices:",
            ]
            lines += [
                f"          - {{id: {d}, type: env_sensor}}"
                for d in self.device_ids
                if self.park_of(d) == park
            ]
        return "\n".join(lines) + "\n"

    def topic(self, device_id: str, channel: str = "telemetry") -> str:
        """The device's topic."""
        park = self.park_of(device_id)
        return f"parksense/v1/{park}/{self.factory_of(park)}/{device_id}/{channel}"


def make_messages(
    fleet: LoadFleet,
    readings: int,
    samples_per_message: int = 5,
    start: datetime | None = None,
    step: timedelta = timedelta(milliseconds=10),
) -> tuple[list[tuple[str, bytes]], set[Row]]:
    """Messages carrying at least ``readings`` readings, and the exact set they carry."""
    metrics = ("temp_c", "humidity_pct", "pm25_ugm3")
    start = start or datetime.now(UTC) - timedelta(hours=1)
    per_message = samples_per_message * len(metrics)
    n_messages = -(-readings // per_message)
    messages: list[tuple[str, bytes]] = []
    expected: set[Row] = set()
    for m in range(n_messages):
        device = fleet.device_ids[m % fleet.devices]
        k = m // fleet.devices
        samples = []
        for s in range(samples_per_message):
            ts = start + step * (k * samples_per_message + s)
            values = {
                "temp_c": round(20 + (m * 7 + s) % 150 / 10, 1),
                "humidity_pct": float((m + s) % 100),
                "pm25_ugm3": float((m * 3 + s) % 500),
            }
            samples.append({"ts": ts.isoformat().replace("+00:00", "Z"), "metrics": values})
            expected |= {(device, name, ts, value) for name, value in values.items()}
        messages.append((fleet.topic(device), orjson.dumps(samples)))
    return messages, expected


class Publisher:
    """A device gateway: one paho client publishing at QoS 1 over a persistent session."""

    def __init__(self, mqtt_settings: MqttSettings, client_id: str | None = None) -> None:
        """Connect and start the network thread."""
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or mqtt_client_id(mqtt_settings, f"pub-{uuid.uuid4().hex[:10]}"),
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.username_pw_set(mqtt_settings.username, _password(mqtt_settings))
        # Keep every unacknowledged message for resending across a broker restart.
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(mqtt_settings.host, mqtt_settings.port)
        self.client.loop_start()

    def publish_all(self, messages: Iterable[tuple[str, bytes]]) -> list[mqtt.MQTTMessageInfo]:
        """Queue every message at QoS 1."""
        return [self.client.publish(topic, payload, qos=1) for topic, payload in messages]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _password(settings: MqttSettings) -> str | None:
    return settings.password.get_secret_value() if settings.password else None


def publish_concurrently(
    mqtt_settings: MqttSettings,
    messages: Sequence[tuple[str, bytes]],
    publishers: int = 4,
    timeout_s: float = 120,
    copies: int = 1,
) -> None:
    """Publish from several gateways at once and wait until the broker acknowledged all."""
    clients = [Publisher(mqtt_settings) for _ in range(publishers)]
    infos: list[mqtt.MQTTMessageInfo] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        mine = [messages[i] for i in range(index, len(messages), publishers)] * copies
        sent = clients[index].publish_all(mine)
        with lock:
            infos.extend(sent)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(
        lambda: all(info.is_published() for info in infos),
        timeout_s,
        interval_s=0.1,
        message="the broker did not acknowledge every message",
    )
    for client in clients:
        client.close()


class IngestProcess:
    """``python -m services.ingest`` as a real child process."""

    def __init__(
        self,
        db: DatabaseSettings,
        mqtt_settings: MqttSettings,
        log_dir: Path,
        client_id: str | None = None,
        share_group: str | None = None,
        extra_env: dict[str, str] | None = None,
        slot: tuple[int, int] = (1, 1),
        command_prefix: Sequence[str] = (),
    ) -> None:
        """Prepare (not start) a worker; it connects with the ingest credential.

        ``share_group`` shares the root among workers; else ``slot`` (index, workers) says
        which parks this one takes. ``command_prefix`` runs it under another command (in a
        network namespace: ``ip netns exec NAME``).
        """
        mqtt_settings = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
        self.client_id = client_id or mqtt_client_id(mqtt_settings, uuid.uuid4().hex[:8])
        self.mqtt_settings = mqtt_settings
        self.db = db
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{self.client_id}.log"
        self.env = {
            **os.environ,
            **settings_env(db),
            "PARKSENSE_MQTT_HOST": mqtt_settings.host,
            "PARKSENSE_MQTT_PORT": str(mqtt_settings.port),
            "PARKSENSE_MQTT_USERNAME": mqtt_settings.username or "",
            "PARKSENSE_MQTT_PASSWORD": _password(mqtt_settings) or "",
            "PARKSENSE_INGEST_CLIENT_ID": self.client_id,
            "PARKSENSE_INGEST_SHARE_GROUP": share_group or "",
            "PARKSENSE_INGEST_WORKER_INDEX": str(slot[0]),
            "PARKSENSE_INGEST_WORKERS": str(slot[1]),
            "PARKSENSE_INGEST_METRICS_PORT": str(self.metrics_port),
            "PARKSENSE_INGEST_REGISTRY_REFRESH_S": "0.2",
            "PARKSENSE_INGEST_RETRY_MAX_S": "1",
            **(extra_env or {}),
        }
        self.command_prefix = list(command_prefix)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker and wait until it is subscribed."""
        log = self.log_path.open("ab")
        subscribed_before = self._log_count(SUBSCRIBED_LINE)
        process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "services.ingest"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.process = process
        log.close()
        wait_until(
            lambda: (
                self._log_count(SUBSCRIBED_LINE) > subscribed_before or process.poll() is not None
            ),
            30,
            message=f"ingest did not subscribe; see {self.log_path}",
        )
        assert process.poll() is None, self.log_path.read_text()

    def _log_count(self, text: str) -> int:
        return self.log_path.read_text().count(text) if self.log_path.exists() else 0

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait for the drain; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def stop_and_forget_session(self) -> None:
        """Stop the worker and remove its persistent session from the broker."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(self.mqtt_settings.username, _password(self.mqtt_settings))
        try:
            client.connect(self.mqtt_settings.host, self.mqtt_settings.port, clean_start=True)
            client.loop_start()
            client.disconnect()
            client.loop_stop()
        except OSError:
            pass


def stored_rows(conninfo: str, prefix: str) -> set[Row]:
    """Every stored reading of the test's devices."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT device_id, metric, ts, value FROM readings WHERE device_id LIKE %s",
            (prefix + "-%",),
        ).fetchall()
    return {(d, m, ts, v) for d, m, ts, v in rows}


def count_rows(conninfo: str, prefix: str) -> int:
    """How many readings of the test's devices are stored."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id LIKE %s", (prefix + "-%",)
        ).fetchone()
    return int(row[0]) if row else 0


def dead_letter_reasons(conninfo: str, prefix: str) -> list[str]:
    """Reasons of the test's dead letters, oldest first: one per reason refused in a message."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
            (f"parksense/v1/{prefix}%",),
        ).fetchall()
    return [r[0] for r in rows]


def dead_letter_messages(conninfo: str, prefix: str) -> list[tuple[str, bytes | None]]:
    """(topic, payload) of each of the test's refused messages, oldest first."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (m.message_id) d.topic, m.payload"
            " FROM dead_letter_messages m JOIN dead_letters d USING (message_id)"
            " WHERE d.topic LIKE %s ORDER BY m.message_id",
            (f"parksense/v1/{prefix}%",),
        ).fetchall()
    return [(topic, None if payload is None else bytes(payload)) for topic, payload in rows]


def scrape(port: int) -> dict[str, float]:
    """Read a worker's Prometheus metrics (unlabelled samples only)."""
    import urllib.request  # noqa: PLC0415 - only tests read the metrics page this way

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def mqtt_client(
    mqtt_settings: MqttSettings,
    client_id: str | None = None,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
) -> mqtt.Client:
    """A paho client (MQTT 5 unless told) with the settings' credentials; not yet connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or mqtt_client_id(mqtt_settings, f"test-{uuid.uuid4().hex[:10]}"),
        protocol=protocol,
    )
    if mqtt_settings.username:
        password = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
        client.username_pw_set(mqtt_settings.username, password)
    return client


def acked_all(worker: IngestProcess) -> bool:
    """Whether the worker has acknowledged every message it received (and received one)."""
    figures = scrape(worker.metrics_port)
    received = figures.get("parksense_ingest_messages_received_total", 0.0)
    return received > 0 and figures.get("parksense_ingest_messages_acked_total") == received


class Background:
    """Publish in a thread so the test can break things meanwhile."""

    def __init__(self, target: Callable[[], None]) -> None:
        """Start ``target`` in a thread."""
        self.error: BaseException | None = None

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> None:
        """Wait for the thread and re-raise what it raised."""
        self.thread.join()
        if self.error is not None:
            raise self.error


def assert_exactly_stored(conninfo: str, fleet: LoadFleet, expected: set[Row]) -> None:
    """Wait until the fleet's readings are stored; they must be exactly ``expected``, once."""
    wait_until(
        lambda: count_rows(conninfo, fleet.prefix) >= len(expected),
        120,
        interval_s=0.25,
        message=f"stored {count_rows(conninfo, fleet.prefix)} of {len(expected)} readings",
    )
    stored = stored_rows(conninfo, fleet.prefix)
    assert len(stored - expected) == 0, "stored readings that were never published"
    assert len(expected - stored) == 0, "published readings that were lost"
    assert count_rows(conninfo, fleet.prefix) == len(stored), "a reading stored twice"
    assert dead_letter_reasons(conninfo, fleet.prefix) == []
