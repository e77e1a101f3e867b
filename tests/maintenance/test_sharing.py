"""Park signals on MQTT: one elected publisher, retained, read with a reader credential."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from schemas.fleet import parse_fleet
from services.access.sync import BrokerSync
from services.api.app import create_app
from services.config import ApiSettings, BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.core.access import CredentialKind, PlatformRole
from services.maintenance.mqtt import PUBLISHER_PROPERTY
from services.stack.mosquitto import MosquittoBroker
from services.stack.stack import PROJECT_ROOT, settings_env
from services.storage.credentials import IssuedCredential, issue_credential
from services.storage.fleet_store import load_fleet
from tests.harness.environment import LOCAL_URL, platform_mqtt
from tests.harness.ingest import IngestProcess
from tests.harness.mqtt_client import Client
from tests.harness.waiting import wait_until

WAIT_S = 30.0


class Site:
    """A park with one production line and one env sensor, ids unique to the test."""

    def __init__(self) -> None:
        """Pick the ids."""
        tag = "t" + uuid.uuid4().hex[:8]
        self.park = f"{tag}-park"
        self.factory = f"{tag}-f1"
        self.line = f"{tag}-line"
        self.sensor = f"{tag}-env"

    def fleet(self) -> str:
        """The fleet file."""
        return (
            f"parks:\n  - id: {self.park}\n    factories:\n      - id: {self.factory}\n"
            f"        devices:\n"
            f"          - {{id: {self.line}, type: production_line, capacity_units_per_hour: 60}}\n"
            f"          - {{id: {self.sensor}, type: env_sensor}}\n"
        )

    def topic(self, device: str) -> str:
        """A device's telemetry topic."""
        return f"parksense/v1/{self.park}/{self.factory}/{device}/telemetry"

    @property
    def signals_topic(self) -> str:
        """The park's shared signals."""
        return f"parksense/v1/{self.park}/signals"


class Reader:
    """A subscriber of a park's signals that keeps each message with its publisher."""

    def __init__(self, mosquitto: MosquittoBroker, credential: IssuedCredential) -> None:
        """Connect with the reader credential and subscribe to the park's signals."""
        self.messages: list[tuple[dict[str, Any], str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{credential.client_id_prefix}{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(credential.username, credential.password)
        self.client.on_message = self._on_message
        self.granted: list[int] = []
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.granted.extend(
            c.value for c in codes
        )
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        [topic] = credential.topics
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: self.granted, WAIT_S, message="no SUBACK")
        assert self.granted == [1], self.granted

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = dict(getattr(message.properties, "UserProperty", []) or [])
        body = orjson.loads(message.payload) if message.payload else {}
        with self._lock:
            self.messages.append((body, props.get(PUBLISHER_PROPERTY, ""), message.retain))

    def received(self) -> list[tuple[dict[str, Any], str, bool]]:
        """The messages so far."""
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


class Maintenance:
    """A real ``python -m services.maintenance`` with the maintenance MQTT credential."""

    def __init__(self, db: DatabaseSettings, mqtt_settings: MqttSettings, log: Path) -> None:
        """Start the process."""
        credential = platform_mqtt(mqtt_settings, PlatformRole.MAINTENANCE)
        env = {
            **os.environ,
            **settings_env(db),
            **settings_env(credential),
            "PARKSENSE_SHARING_REPUBLISH_INTERVAL_S": "0.5",
            "PARKSENSE_SHARING_CHECK_INTERVAL_S": "0.2",
            "PARKSENSE_SHARING_STANDBY_POLL_S": "0.2",
        }
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.maintenance"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid

    def stop(self) -> None:
        """Stop the process (it was started here, so it is ours to stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def publisher_pid(client_id: str) -> int:
    """The pid in a publisher client id (``parksense.maintenance.signals-{pid}-{hex}``)."""
    return int(client_id.rsplit(".", 1)[1].split("-")[1])


@pytest.fixture
def site(clean_db: str, broker_auth: BrokerAuthSettings, mosquitto: MosquittoBroker) -> Site:
    """The fleet, loaded and in force at the broker."""
    loaded = Site()
    load_fleet(clean_db, parse_fleet(loaded.fleet()))
    BrokerSync(broker_auth, MqttSettings(host=mosquitto.host, port=mosquitto.port)).sync(clean_db)
    return loaded


@pytest.fixture
def credentials(
    clean_db: str, broker_auth: BrokerAuthSettings, mosquitto: MosquittoBroker
) -> Callable[[CredentialKind, str], IssuedCredential]:
    """Issue a credential and put it in force at the broker."""

    def issue(kind: CredentialKind, subject: str) -> IssuedCredential:
        with psycopg.connect(clean_db) as conn:
            issued = issue_credential(conn, kind, subject)
        BrokerSync(broker_auth, MqttSettings(host=mosquitto.host, port=mosquitto.port)).sync(
            clean_db
        )
        return issued

    return issue


@pytest.fixture
def processes() -> Iterator[list[Maintenance | IngestProcess]]:
    """Processes a test starts; each is stopped afterwards."""
    started: list[Maintenance | IngestProcess] = []
    yield started
    for process in started:
        if isinstance(process, Maintenance):
            process.stop()
        else:
            process.stop_and_forget_session()


def test_a_reader_sees_a_fault_in_the_retained_signals_within_seconds(
    site: Site,
    credentials: Callable[[CredentialKind, str], IssuedCredential],
    db_settings: DatabaseSettings,
    mqtt_settings: MqttSettings,
    mosquitto: MosquittoBroker,
    processes: list[Maintenance | IngestProcess],
    tmp_path: Path,
) -> None:
    """Device publishes state=fault → ingest → the reader's retained signals show the alarm."""
    reader_credential = credentials(CredentialKind.READER, site.park)
    device = credentials(CredentialKind.DEVICE, site.line)
    ingest = IngestProcess(db_settings, mqtt_settings, tmp_path)
    processes.append(ingest)
    ingest.start()
    processes.append(Maintenance(db_settings, mqtt_settings, tmp_path / "maintenance.log"))
    reader = Reader(mosquitto, reader_credential)
    try:
        wait_until(reader.received, WAIT_S, message="no signals were published")
        first, _, _ = reader.received()[0]
        assert first["park_id"] == site.park
        assert first["alarms"] == []
        sample = {"ts": datetime.now(UTC).isoformat(), "metrics": {"state": "fault"}}
        gadget = Client(mosquitto.host, mosquitto.port, device.username, device.password)
        assert gadget.connect()
        assert gadget.publish(site.topic(site.line), orjson.dumps(sample)) == 0
        gadget.close()

        def alarmed() -> dict[str, Any] | None:
            bodies = [body for body, _, _ in reader.received()]
            return next(
                (
                    b
                    for b in reversed(bodies)
                    if any(a["device_id"] == site.line for a in b["alarms"])
                ),
                None,
            )

        wait_until(alarmed, WAIT_S, message="the fault never showed in the shared signals")
        body = alarmed()
        assert body is not None
        [cause] = body["alarms"]
        assert (cause["metric"], cause["reason"], cause["text"]) == ("state", "state", "fault")
        assert body["signals"]["alarm_rate"] == 1.0
    finally:
        reader.close()
    # The leader records what it shares, for readers of the database (Grafana).
    with psycopg.connect(db_settings.conninfo()) as conn:
        recorded = conn.execute(
            "SELECT max(devices_in_alarm) FROM park_signals_1m WHERE park_id = %s", (site.park,)
        ).fetchone()
    assert recorded == (1,)
    # A late subscriber gets the retained message at once, the fault in it.
    late = Reader(mosquitto, reader_credential)
    try:
        wait_until(late.received, WAIT_S, message="no retained message for a new subscriber")
        retained, _, retain_flag = late.received()[0]
        assert retain_flag
        assert retained["alarms"][0]["device_id"] == site.line
    finally:
        late.close()
    # The shared body is the route's body at the same as_of and window.
    app = create_app(ApiSettings(), db_settings)
    with TestClient(app, base_url=LOCAL_URL) as api:
        answer = api.get(
            f"/v1/parks/{site.park}/signals",
            params={"as_of": retained["as_of"], "window": f"{int(retained['window_s'])}s"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == retained


def test_one_maintenance_process_publishes_and_a_standby_takes_over(
    site: Site,
    credentials: Callable[[CredentialKind, str], IssuedCredential],
    db_settings: DatabaseSettings,
    mqtt_settings: MqttSettings,
    mosquitto: MosquittoBroker,
    processes: list[Maintenance | IngestProcess],
    clean_db: str,
    tmp_path: Path,
) -> None:
    """Two publishers: only the leader publishes; killed, the standby publishes instead."""
    reader = Reader(mosquitto, credentials(CredentialKind.READER, site.park))
    first = Maintenance(db_settings, mqtt_settings, tmp_path / "first.log")
    processes.append(first)
    second = Maintenance(db_settings, mqtt_settings, tmp_path / "second.log")
    processes.append(second)
    ours = {first.pid, second.pid}
    try:
        # Both processes hold a database session for the election, and one of them leads.
        wait_until(
            lambda: sessions(clean_db) == 2, WAIT_S, message="both publishers never connected"
        )
        wait_until(lambda: len(reader.received()) >= 1, WAIT_S, message="nothing was published")
        mark = len(reader.received())
        wait_until(lambda: len(reader.received()) >= mark + 6, WAIT_S, message="too few messages")
        publishers = {publisher_pid(p) for _, p, _ in reader.received()[mark:]}
        assert len(publishers) == 1, publishers
        [leader] = publishers
        assert leader in ours
        standby = (ours - {leader}).pop()
        os.kill(leader, signal.SIGKILL)
        wait_until(
            lambda: any(publisher_pid(p) == standby for _, p, _ in reader.received()),
            WAIT_S,
            message="the standby never took over",
        )
        taken = next(
            i for i, (_, p, _) in enumerate(reader.received()) if publisher_pid(p) == standby
        )
        wait_until(lambda: len(reader.received()) >= taken + 3, WAIT_S, message="it stopped")
        assert {publisher_pid(p) for _, p, _ in reader.received()[taken:]} == {standby}
    finally:
        reader.close()


def sessions(conninfo: str) -> int:
    """Database sessions of signal publishers."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'parksense-signals'"
        ).fetchone()
    return int(row[0]) if row else 0
