"""The maintenance process's MQTT edge: one MQTT 5 connection that publishes, retained.

paho runs its own network thread (``loop_start``) and reconnects by itself. Publishing is
thread-safe in paho 2; callbacks only record the connection state. While the broker is
away nothing is queued (a retained park signal is superseded within seconds, so stale ones
would only be sent to be replaced); each new connection bumps ``epoch``, so the publisher
republishes everything once the broker is back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.config import MqttSettings

logger = logging.getLogger(__name__)

KEEPALIVE_S = 30
# Reconnect backoff, doubling from the first to the last.
_RECONNECT_MIN_S = 1
_RECONNECT_MAX_S = 10
# QoS 1 messages in flight at once; paho holds the rest (at most _MAX_QUEUED) until acked.
_MAX_INFLIGHT = 100
_MAX_QUEUED = 10_000
# MQTT 5 user property naming the client that published (which instance is the leader).
PUBLISHER_PROPERTY = "publisher"


class RetainedPublisher:
    """Publishes retained QoS 1 messages with one credential and client id."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        """Prepare the client; ``start`` connects."""
        self._settings = settings
        self.client_id = client_id
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        self._client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        self._client.max_inflight_messages_set(_MAX_INFLIGHT)
        self._client.max_queued_messages_set(_MAX_QUEUED)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self._connected = False
        self._epoch = 0
        self._properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho ships no annotations here
        self._properties.UserProperty = (PUBLISHER_PROPERTY, client_id)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:  # noqa: ANN401 - paho's callback signature
        if reason.is_failure:
            logger.warning("MQTT connection refused: %s", reason)
            return
        with self._lock:
            self._connected = True
            self._epoch += 1
        logger.info("Connected to the broker at %s:%d", self._settings.host, self._settings.port)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:  # noqa: ANN401 - paho's callback signature
        with self._lock:
            was = self._connected
            self._connected = False
        if was:
            logger.warning("Disconnected from the broker: %s", reason)

    def start(self) -> None:
        """Connect in the background (paho retries until the broker answers)."""
        self._client.connect_async(self._settings.host, self._settings.port, KEEPALIVE_S)
        self._client.loop_start()

    @property
    def epoch(self) -> int:
        """The number of the current connection; 0 before the first, unchanged while down."""
        with self._lock:
            return self._epoch if self._connected else 0

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish ``payload`` retained at QoS 1; return False when not connected or full."""
        if not self.epoch:
            return False
        info = self._client.publish(topic, payload, qos=1, retain=True, properties=self._properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning("Could not publish to %s: %s", topic, mqtt.error_string(info.rc))
            return False
        return True

    def stop(self) -> None:
        """Disconnect (after what is in flight is written) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
