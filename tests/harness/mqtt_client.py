"""A test MQTT 5 client that reports what the broker answered: CONNACK, PUBACK, SUBACK."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.harness.waiting import wait_until

TIMEOUT_S = 10.0
# MQTT 5 reason code "Not authorized" (PUBACK, SUBACK, CONNACK).
NOT_AUTHORIZED = 0x87


class Client:
    """One connection with a given credential and client id."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
    ) -> None:
        """Prepare the client; ``connect`` opens the connection."""
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{username}.{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.host = host
        self.port = port
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._pubacks: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason
        self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.disconnected.set()
        self._connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._pubacks[mid] = reason.value

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self._subacks[mid] = [r.value for r in reasons]

    def connect(self) -> bool:
        """Connect and wait for the CONNACK; return whether the broker accepted."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT_S), "no CONNACK and no disconnect"
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0 or 0x10: accepted)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self._pubacks, TIMEOUT_S, message="no PUBACK")
        return self._pubacks[info.mid]

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK's reason code (granted QoS or failure)."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        wait_until(lambda: mid in self._subacks, TIMEOUT_S, message="no SUBACK")
        return self._subacks[mid][0]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def accepted(reason_code: int) -> bool:
    """Whether a PUBACK or SUBACK reason code means success (below 0x80)."""
    return reason_code < 0x80
