"""Message sizes: over 64 KiB is an oversize dead letter, over 1 MiB the broker refuses."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from schemas.telemetry import MAX_PAYLOAD_BYTES
from services.config import MqttSettings
from services.stack.mosquitto import MAX_PACKET_BYTES, MESSAGE_SIZE_LIMIT_BYTES
from tests.harness.environment import mqtt_client_id
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    dead_letter_messages,
    dead_letter_reasons,
    mqtt_client,
)
from tests.harness.waiting import wait_until

# MQTT 5 reason code 0x95, "Packet too large" (MQTT 5.0 section 2.4).
PACKET_TOO_LARGE = 0x95


@dataclass
class Seen:
    """What a publisher saw from the broker: PUBACK reason codes by mid, and disconnects."""

    connected: threading.Event = field(default_factory=threading.Event)
    acks: dict[int, int] = field(default_factory=dict)
    disconnects: list[int] = field(default_factory=list)
    max_packet_size: int | None = None  # from an MQTT 5 CONNACK


def connect(mqtt_settings: MqttSettings, protocol: MQTTProtocolVersion) -> tuple[mqtt.Client, Seen]:
    """A connected publisher that records PUBACK reason codes and disconnects."""
    seen = Seen()
    client = mqtt_client(mqtt_settings, protocol=protocol)

    def on_publish(_c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        seen.acks[mid] = reason.value

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        seen.disconnects.append(reason.value)

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, _reason: Any, properties: Any) -> None:
        seen.max_packet_size = getattr(properties, "MaximumPacketSize", None)
        seen.connected.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect(mqtt_settings.host, mqtt_settings.port)
    client.loop_start()
    assert seen.connected.wait(10), "no CONNACK"
    return client, seen


def close(client: mqtt.Client) -> None:
    """Disconnect and stop the network thread."""
    client.disconnect()
    client.loop_stop()


def test_message_over_the_contract_reaches_ingest_as_an_oversize_dead_letter(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """Payloads above 64 KiB, up to the broker's limit, are oversize dead letters, kept whole."""
    topic = fleet.topic(fleet.device_ids[0])
    messages = [(topic, b"x" * (MAX_PAYLOAD_BYTES + 1)), (topic, b"y" * MESSAGE_SIZE_LIMIT_BYTES)]
    client, seen = connect(mqtt_settings, MQTTProtocolVersion.MQTTv5)
    mids = [client.publish(t, p, qos=1).mid for t, p in messages]
    wait_until(lambda: all(mid in seen.acks for mid in mids), 20)
    close(client)
    assert [seen.acks[mid] for mid in mids] == [0, 0]
    wait_until(lambda: len(dead_letter_messages(clean_db, fleet.prefix)) == 2, 20)
    assert dead_letter_messages(clean_db, fleet.prefix) == messages
    assert dead_letter_reasons(clean_db, fleet.prefix) == ["oversize", "oversize"]


def mosquitto_pub(mqtt_settings: MqttSettings, topic: str, lines: list[bytes]) -> str:
    """Publish each line as a QoS 1 message from one MQTT 5 ``mosquitto_pub``; its debug log.

    libmosquitto reports any PUBACK reason code; paho-mqtt refuses 0x95 in a PUBACK as a
    malformed packet (it is not a PUBACK code in MQTT 5.0 section 3.4.2.1), so this test
    uses the broker's own client to see what the broker sends.
    """
    argv = ["mosquitto_pub", "-V", "5", "-q", "1", "-d", "-l", "-t", topic]
    argv += ["-h", mqtt_settings.host, "-p", str(mqtt_settings.port)]
    if mqtt_settings.username:
        argv += ["-i", mqtt_client_id(mqtt_settings, "size-probe"), "-u", mqtt_settings.username]
        if mqtt_settings.password:
            argv += ["-P", mqtt_settings.password.get_secret_value()]
    done = subprocess.run(
        argv, input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60, check=False
    )
    return done.stdout.decode()


def test_broker_refuses_a_message_over_its_limit_with_reason_0x95_for_mqtt5(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """An MQTT 5 publisher gets PUBACK 0x95 on the same connection; ingest never sees it."""
    topic = fleet.topic(fleet.device_ids[0])
    log = mosquitto_pub(mqtt_settings, topic, [b"z" * (MESSAGE_SIZE_LIMIT_BYTES + 1), b"{not json"])
    assert f"received PUBACK (Mid: 1, RC:{PACKET_TOO_LARGE})" in log
    assert "received PUBACK (Mid: 2, RC:0)" in log
    assert log.count("sending CONNECT") == 1
    wait_until(lambda: dead_letter_reasons(clean_db, fleet.prefix), 15)
    # Had the big message reached ingest, it would be an oversize dead letter before this.
    assert dead_letter_reasons(clean_db, fleet.prefix) == ["malformed_json"]


def test_broker_drops_a_message_over_its_limit_with_a_plain_puback_for_mqtt311(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """MQTT 3.1.1 has no reason codes: the publisher gets a PUBACK, stays connected, no resend."""
    topic = fleet.topic(fleet.device_ids[0])
    client, seen = connect(mqtt_settings, MQTTProtocolVersion.MQTTv311)
    big = client.publish(topic, b"z" * (MESSAGE_SIZE_LIMIT_BYTES + 1), qos=1).mid
    after = client.publish(topic, b"{not json", qos=1).mid
    wait_until(lambda: big in seen.acks and after in seen.acks, 20)
    assert seen.disconnects == []
    close(client)
    wait_until(lambda: dead_letter_reasons(clean_db, fleet.prefix), 15)
    # Had the big message reached ingest, it would be an oversize dead letter before this.
    assert dead_letter_reasons(clean_db, fleet.prefix) == ["malformed_json"]


def test_packet_over_the_packet_cap_is_advertised_and_ends_the_connection(
    mqtt_settings: MqttSettings,
) -> None:
    """MQTT 5 clients learn max_packet_size from CONNACK; a bigger packet drops the connection."""
    client, seen = connect(mqtt_settings, MQTTProtocolVersion.MQTTv5)
    assert seen.max_packet_size == MAX_PACKET_BYTES
    client.reconnect_delay_set(60, 60)  # the test sees the first disconnect, not the loop
    client.publish("parksense/v1/too/big", b"z" * MAX_PACKET_BYTES, qos=1)
    wait_until(lambda: seen.disconnects, 20)
    close(client)
    assert seen.disconnects[0] != 0
