"""Credential changes while a persistent session is offline: enforced, and the broker lives.

Mosquitto 2.0.11 re-checks every session it holds at each reload, offline ones too, and
refusing an offline one there corrupted its session-expiry list: the broker crashed once the
session was taken over or expired (docs/security.md, "Mosquitto 2.0.11 notes"). These tests
rotate and revoke credentials through the API (render, SIGHUP, wait for the reload) while
their persistent sessions are offline, then take the sessions over or let them expire,
with more reloads before and after.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.access.sync import BrokerSync
from services.config import MqttSettings
from services.core.access import PlatformRole
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import platform_mqtt
from tests.harness.mqtt_client import NOT_AUTHORIZED
from tests.harness.waiting import wait_until

TIMEOUT_S = 10.0
# Long enough to outlive every step of a test; the revocation test's sessions expire sooner.
SESSION_EXPIRY_S = 3600
SHORT_SESSION_EXPIRY_S = 1
# Reloads in a row: each used to add the offline session to the expiry list once more.
RELOADS = 3


@dataclass
class Session:
    """What one MQTT 5 connection saw: its CONNACK, and the messages delivered to it."""

    client: mqtt.Client
    connack: ReasonCode | None = None
    session_present: bool = False
    answered: threading.Event = field(default_factory=threading.Event)
    subscribed: threading.Event = field(default_factory=threading.Event)
    granted: list[int] = field(default_factory=list)
    messages: list[tuple[str, bytes, int]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether the broker accepted the CONNECT."""
        return self.connack is not None and not self.connack.is_failure


@contextmanager
def session(
    broker: MosquittoBroker,
    username: str,
    password: str,
    client_id: str,
    *,
    expiry_s: int = SESSION_EXPIRY_S,
) -> Iterator[Session]:
    """Yield an MQTT 5 connection resuming (or starting) a persistent session; closed after.

    ``expiry_s`` 0 asks for a clean session, which also ends any stored one.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    seen = Session(client)

    def on_connect(_c: Any, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        seen.connack = reason
        seen.session_present = bool(flags.session_present)
        seen.answered.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        seen.answered.set()

    def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        seen.granted = [r.value for r in reasons]
        seen.subscribed.set()

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        seen.messages.append((message.topic, bytes(message.payload), message.qos))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    client.connect(
        broker.host, broker.port, keepalive=30, clean_start=expiry_s == 0, properties=properties
    )
    client.loop_start()
    try:
        assert seen.answered.wait(TIMEOUT_S), f"{client_id}: no CONNACK and no disconnect"
        yield seen
    finally:
        client.disconnect()
        client.loop_stop()


def issue(api: TestClient, path: str) -> dict[str, Any]:
    """POST a credential path (issue or rotate; the broker reloads) and return the credential."""
    response = api.post(path)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def reload_broker(broker_sync: BrokerSync, conninfo: str) -> None:
    """Sync the credentials ``RELOADS`` times: each a SIGHUP, awaited until in force."""
    for _ in range(RELOADS):
        broker_sync.sync(conninfo)


def assert_serving(broker: MosquittoBroker, pid: int | None, mqtt_settings: MqttSettings) -> None:
    """The broker is the same process as before, and it still accepts and acknowledges."""
    assert broker.is_running(), "the broker crashed"
    assert broker.pid == pid, "the broker crashed and was started again"
    assert mqtt_settings.username is not None
    assert mqtt_settings.password is not None
    with session(
        broker,
        mqtt_settings.username,
        mqtt_settings.password.get_secret_value(),
        f"{mqtt_settings.username}.alive-{uuid.uuid4().hex[:8]}",
        expiry_s=0,
    ) as alive:
        assert alive.accepted
        info = alive.client.publish(f"parksense/v1/{uuid.uuid4().hex[:8]}/f/d/telemetry", b"{}", 1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()


class Fleet:
    """One park with one factory of two env sensors, with ids unique to the test."""

    def __init__(self) -> None:
        """Pick the ids."""
        tag = "o" + uuid.uuid4().hex[:8]
        self.park, self.factory = f"{tag}-park", f"{tag}-f"
        self.devices = [f"{tag}-d1", f"{tag}-d2"]

    def yaml(self, devices: list[str] | None = None) -> str:
        """The fleet file, with ``devices`` (default: both) in the factory."""
        rows = "".join(
            f"          - {{id: {d}, type: env_sensor}}\n" for d in devices or self.devices
        )
        return (
            f"parks:\n  - id: {self.park}\n    factories:\n"
            f"      - id: {self.factory}\n        devices:\n{rows}"
        )


@pytest.fixture
def fleet(api: TestClient) -> Fleet:
    """The fleet, loaded through the API."""
    loaded = Fleet()
    response = api.put(
        "/v1/fleet", content=loaded.yaml(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 200, response.text
    return loaded


def test_rotating_a_gateway_while_its_session_is_offline_keeps_session_and_broker(
    fleet: Fleet,
    api: TestClient,
    broker_sync: BrokerSync,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    db_conninfo: str,
) -> None:
    """After a rotation the old password is refused; the new one resumes the queued session."""
    pid = mosquitto.pid
    path = f"/v1/factories/{fleet.factory}/credentials"
    first = issue(api, path)
    client_id = first["client_id_prefix"] + "edge"
    command_topic = f"spBv1.0/{fleet.park}/NCMD/{fleet.factory}"
    with session(mosquitto, first["username"], first["password"], client_id) as gateway:
        assert gateway.accepted
        gateway.client.subscribe(command_topic, qos=1)
        assert gateway.subscribed.wait(TIMEOUT_S), "no SUBACK"
        assert gateway.granted == [1]

    second = issue(api, path)
    assert second["password"] != first["password"]
    ingest = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    assert ingest.username is not None
    assert ingest.password is not None
    with session(
        mosquitto,
        ingest.username,
        ingest.password.get_secret_value(),
        f"{ingest.username}.rebirth-{uuid.uuid4().hex[:8]}",
        expiry_s=0,
    ) as host:
        info = host.client.publish(command_topic, b"rebirth", qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()
    reload_broker(broker_sync, db_conninfo)

    with session(mosquitto, first["username"], first["password"], client_id) as old:
        assert old.connack is not None
        assert old.connack.value == NOT_AUTHORIZED
    reload_broker(broker_sync, db_conninfo)
    with session(mosquitto, second["username"], second["password"], client_id) as resumed:
        assert resumed.accepted
        assert resumed.session_present, "the rotation lost the gateway's session"
        wait_until(
            lambda: resumed.messages,
            TIMEOUT_S,
            message="the command queued for the offline session was not delivered",
        )
    assert resumed.messages == [(command_topic, b"rebirth", 1)]

    reload_broker(broker_sync, db_conninfo)
    # Another session goes onto the expiry list (where a dangling entry was read), then the
    # gateway's session is taken over once more and ended, with reloads in between.
    with session(mosquitto, second["username"], second["password"], client_id + "-2"):
        pass
    reload_broker(broker_sync, db_conninfo)
    for name in (client_id, client_id + "-2"):
        with session(mosquitto, second["username"], second["password"], name, expiry_s=0):
            pass
    reload_broker(broker_sync, db_conninfo)
    assert_serving(mosquitto, pid, mqtt_settings)


@pytest.mark.parametrize("revoke", ["delete", "fleet"])
def test_revoking_a_device_while_its_session_is_offline_locks_it_out_and_keeps_the_broker(
    revoke: str,
    fleet: Fleet,
    api: TestClient,
    broker_sync: BrokerSync,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    db_conninfo: str,
) -> None:
    """A revoked device (DELETE, or a fleet load without it) is refused; its session expires."""
    pid = mosquitto.pid
    device = fleet.devices[1]
    path = f"/v1/devices/{device}/credentials"
    credential = issue(api, path)
    client_id = credential["client_id_prefix"] + "sensor"
    with session(
        mosquitto,
        credential["username"],
        credential["password"],
        client_id,
        expiry_s=SHORT_SESSION_EXPIRY_S,
    ) as connected:
        assert connected.accepted

    if revoke == "delete":
        assert api.delete(path).status_code == 204
    else:
        response = api.put(
            "/v1/fleet",
            content=fleet.yaml(fleet.devices[:1]),
            headers={"content-type": "application/yaml"},
        )
        assert response.status_code == 200, response.text
    reload_broker(broker_sync, db_conninfo)
    with session(mosquitto, credential["username"], credential["password"], client_id) as refused:
        assert refused.connack is not None
        assert refused.connack.value == NOT_AUTHORIZED

    expired = f"Expiring client {client_id} due to timeout."
    wait_until(
        lambda: expired in mosquitto.log_file.read_text(encoding="utf-8"),
        TIMEOUT_S,
        message="the revoked device's session did not expire",
    )
    reload_broker(broker_sync, db_conninfo)
    # The next sessions onto the expiry list, and their own expiry, with reloads between.
    ingest = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    assert ingest.username is not None
    assert ingest.password is not None
    later = f"{ingest.username}.later-{uuid.uuid4().hex[:8]}"
    with session(
        mosquitto,
        ingest.username,
        ingest.password.get_secret_value(),
        later,
        expiry_s=SHORT_SESSION_EXPIRY_S,
    ):
        pass
    reload_broker(broker_sync, db_conninfo)
    wait_until(
        lambda: f"Expiring client {later} due to timeout." in mosquitto.log_file.read_text("utf-8"),
        TIMEOUT_S,
        message="a later session did not expire",
    )
    reload_broker(broker_sync, db_conninfo)
    assert_serving(mosquitto, pid, mqtt_settings)


def test_rotation_drops_the_connected_client_and_keeps_the_offline_session_of_one_credential(
    fleet: Fleet,
    api: TestClient,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
) -> None:
    """One credential, one session offline and one connected: the reload ends only the second."""
    pid = mosquitto.pid
    path = f"/v1/factories/{fleet.factory}/credentials"
    first = issue(api, path)
    prefix = first["client_id_prefix"]
    with session(mosquitto, first["username"], first["password"], prefix + "offline") as went:
        assert went.accepted
    # A client that is gone for good: its memory is free for the next client's.
    with session(mosquitto, first["username"], first["password"], prefix + "gone", expiry_s=0):
        pass
    with session(mosquitto, first["username"], first["password"], prefix + "online") as online:
        assert online.accepted
        second = issue(api, path)
        wait_until(
            lambda: not online.client.is_connected(),
            TIMEOUT_S,
            message="the client connected with the rotated password stayed connected",
        )
    with session(mosquitto, second["username"], second["password"], prefix + "offline") as back:
        assert back.accepted
        assert back.session_present, "the reload ended the offline session"
    assert_serving(mosquitto, pid, mqtt_settings)
