"""The private Mosquitto broker: sessions survive restarts and reloads, big messages pass."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.access.sync import BrokerSync
from services.config import BrokerAuthSettings, MqttSettings
from services.core.access import PlatformRole
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import mqtt_client_id, platform_mqtt
from tests.harness.waiting import wait_until

SESSION_EXPIRY_S = 3600


@dataclass
class Received:
    """What a test client saw: its CONNACK's session-present flag and its messages."""

    connected: threading.Event = field(default_factory=threading.Event)
    session_present: bool | None = None
    messages: list[tuple[str, bytes, int]] = field(default_factory=list)


@contextmanager
def mqtt5_client(
    broker: MosquittoBroker, settings: MqttSettings, name: str, *, persistent: bool = True
) -> Iterator[tuple[mqtt.Client, Received]]:
    """Yield a connected MQTT 5 client (a persistent session unless told otherwise)."""
    received = Received()
    client_id = mqtt_client_id(settings, name)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    assert settings.password is not None
    client.username_pw_set(settings.username, settings.password.get_secret_value())

    def on_connect(_c, _u, flags, _reason, _props) -> None:
        received.session_present = flags.session_present
        received.connected.set()

    def on_message(_c, _u, message) -> None:
        received.messages.append((message.topic, message.payload, message.qos))

    client.on_connect = on_connect
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
    client.connect(
        broker.host, broker.port, keepalive=30, clean_start=not persistent, properties=properties
    )
    client.loop_start()
    try:
        assert received.connected.wait(10), f"{client_id} got no CONNACK"
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


def publish_qos1(
    broker: MosquittoBroker, settings: MqttSettings, topic: str, payload: bytes
) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    with mqtt5_client(broker, settings, f"pub-{uuid.uuid4().hex[:8]}", persistent=False) as (
        client,
        _,
    ):
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()


def test_broker_restart_keeps_queued_qos1_message_of_persistent_session(
    mosquitto: MosquittoBroker, mqtt_settings: MqttSettings
) -> None:
    """A QoS 1 message queued for an offline persistent session survives a broker restart."""
    prefix = f"parksense/v1/{uuid.uuid4().hex[:8]}/f/d"
    reader = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    client_id = f"sub-{uuid.uuid4().hex[:8]}"
    with mqtt5_client(mosquitto, reader, client_id) as (client, _):
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.subscribe(f"{prefix}/#", qos=1)
        assert subscribed.wait(10), "no SUBACK"
    publish_qos1(mosquitto, mqtt_settings, f"{prefix}/telemetry", b'{"seq": 1}')

    old_pid = mosquitto.pid
    mosquitto.restart()
    assert mosquitto.is_running()
    assert mosquitto.pid != old_pid

    with mqtt5_client(mosquitto, reader, client_id) as (_, received):
        assert received.session_present is True
        wait_until(
            lambda: received.messages,
            timeout_s=10,
            message="the queued message did not survive the restart",
        )
    assert received.messages == [(f"{prefix}/telemetry", b'{"seq": 1}', 1)]


def test_reloads_after_a_restart_keep_a_restored_offline_session(
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    broker_auth: BrokerAuthSettings,
    db_conninfo: str,
) -> None:
    """Credential syncs after a broker restart leave a restored, offline session alone.

    Mosquitto 2.0.11 re-checks every session at a reload, offline ones too. One restored
    from the persistence file has no password, so the check refused it and the broker
    "disconnected" it: it lost its ACLs (messages for it were dropped) and each further
    reload put it on the session-expiry list again, which crashed the broker once the
    session was taken over (docs/security.md, "Mosquitto 2.0.11 notes"). The plugin lets
    such a session be until its client connects.
    """
    prefix = f"parksense/v1/{uuid.uuid4().hex[:8]}/f/d"
    reader = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    client_id = f"restored-{uuid.uuid4().hex[:8]}"
    with mqtt5_client(mosquitto, reader, client_id) as (client, _):
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.subscribe(f"{prefix}/#", qos=1)
        assert subscribed.wait(10), "no SUBACK"
    mosquitto.restart()

    sync = BrokerSync(broker_auth, MqttSettings(host=mosquitto.host, port=mosquitto.port))
    sync.sync(db_conninfo)
    sync.sync(db_conninfo)
    publish_qos1(mosquitto, mqtt_settings, f"{prefix}/telemetry", b'{"seq": 2}')

    with mqtt5_client(mosquitto, reader, client_id) as (_, received):
        assert received.session_present is True
        wait_until(
            lambda: received.messages,
            timeout_s=10,
            message="the message for the restored session was dropped at a reload",
        )
    assert received.messages == [(f"{prefix}/telemetry", b'{"seq": 2}', 1)]
    # The takeover that used to leave the broker a dangling pointer; it still runs.
    with mqtt5_client(mosquitto, reader, client_id, persistent=False):
        pass
    assert mosquitto.is_running()


def test_broker_passes_messages_above_the_payload_contract(
    mosquitto: MosquittoBroker, mqtt_settings: MqttSettings
) -> None:
    """A message above 64 KiB reaches subscribers, so ingest can refuse it with a reason."""
    topic = f"parksense/v1/{uuid.uuid4().hex[:8]}/f/d/telemetry"
    payload = b"x" * (96 * 1024)
    reader = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    with mqtt5_client(mosquitto, reader, f"sub-{uuid.uuid4().hex[:8]}", persistent=False) as (
        client,
        received,
    ):
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        publish_qos1(mosquitto, mqtt_settings, topic, payload)
        wait_until(lambda: received.messages, timeout_s=10, message="big message not delivered")
    assert received.messages == [(topic, payload, 1)]


def test_broker_config_keeps_state_in_its_folder(mosquitto: MosquittoBroker) -> None:
    """The broker's config, persistence file and log live in its own state folder."""
    config = mosquitto.config_file.read_text(encoding="utf-8")
    assert f"listener {mosquitto.port} 127.0.0.1" in config
    assert f"persistence_location {mosquitto.state_dir}/" in config
    assert mosquitto.pid_file.read_text(encoding="ascii").strip() == str(mosquitto.pid)
    wait_until(mosquitto.persistence_file.exists, timeout_s=5, message="no autosave")
