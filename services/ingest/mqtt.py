"""The MQTT edge (the only paho import in ingest): persistent MQTT 5 session, manual acks.

Callbacks run on paho's network thread; they only turn a paho message into a frozen
``RawMessage`` and hand it to the asyncio loop with ``call_soon_threadsafe``.

Backpressure: MQTT 5 Receive Maximum should bound the unacknowledged messages the broker
sends, but Mosquitto 2.0 honours it only until the first acknowledgements arrive, then
sends its whole queue (seen with 2.0.11: 100 allowed, 900 sent after 100 PUBACKs). So the
consumer holds at most ``max_buffered_messages``: when they are all taken, the message
callback waits for the pipeline to release some, which stops paho reading the socket and
lets TCP push back to the broker, which keeps the rest queued in the session.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.config import IngestSettings, MqttSettings
from services.core.topics import legacy_subscription_filters, subscription_filters
from services.ingest import metrics
from services.ingest.errors import BrokerUnavailableError

logger = logging.getLogger(__name__)

# While the buffer is full, the callback re-checks for a stop request this often.
_BACKPRESSURE_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One received PUBLISH, as the pipeline sees it."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: float  # wall-clock seconds since the epoch
    epoch: int  # connection number: acks are only valid on the connection that received it


class MqttConsumer:
    """A paho client on its own thread, feeding a callback on the asyncio loop."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        ingest_settings: IngestSettings,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[RawMessage], None],
    ) -> None:
        """Create the client; ``start`` connects."""
        self._settings = mqtt_settings
        self._ingest = ingest_settings
        self._loop = loop
        self._deliver = deliver
        self._epoch = 0
        self._connected = False
        self._paused = False
        self._capacity = ingest_settings.max_buffered_messages
        self._slots = threading.Semaphore(self._capacity)
        self._held = 0
        self._peak = 0
        self._held_lock = threading.Lock()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=ingest_settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if mqtt_settings.username:
            password = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
            client.username_pw_set(mqtt_settings.username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    @property
    def epoch(self) -> int:
        """The current connection number."""
        return self._epoch

    @property
    def connected(self) -> bool:
        """Whether the session is up."""
        return self._connected

    def start(self, deadline_s: float = 30.0) -> None:
        """Connect (retrying until the deadline) and start the network thread."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho ships no annotations here
        properties.SessionExpiryInterval = self._ingest.session_expiry_s
        properties.ReceiveMaximum = self._ingest.receive_maximum
        give_up = time.monotonic() + deadline_s
        delay = 0.2
        while True:
            try:
                self._client.connect(
                    self._settings.host,
                    self._settings.port,
                    keepalive=30,
                    clean_start=False,
                    properties=properties,
                )
                break
            except OSError as exc:
                if time.monotonic() > give_up:
                    raise BrokerUnavailableError(
                        self._settings.host, self._settings.port, str(exc)
                    ) from exc
                logger.warning(
                    "Broker %s:%d not reachable (%s), retrying in %.1f s",
                    self._settings.host,
                    self._settings.port,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._client.loop_start()

    def ack(self, mids: list[int], epoch: int) -> int:
        """Send PUBACKs for messages received on connection ``epoch``; returns how many."""
        if epoch != self._epoch or not self._connected:
            return 0
        for mid in mids:
            self._client.ack(mid, 1)
        return len(mids)

    @property
    def held(self) -> int:
        """Messages delivered to the pipeline and not yet released."""
        return self._held

    def release(self, messages: int) -> None:
        """Give back buffer slots for messages the pipeline has written (or dropped)."""
        if messages <= 0:
            return
        with self._held_lock:
            messages = min(messages, self._held)
            self._held -= messages
        for _ in range(messages):
            self._slots.release()

    def stop_receiving(self) -> None:
        """Stop handing messages to the loop (they stay unacknowledged for redelivery)."""
        self._paused = True

    def stop(self) -> None:
        """Disconnect cleanly (the persistent session stays on the broker)."""
        self._paused = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: Any,  # noqa: ANN401 - paho's ReasonCode
        _properties: Any,  # noqa: ANN401 - paho's Properties
    ) -> None:
        if reason_code.is_failure:
            logger.error("Broker refused the connection: %s", reason_code)
            return
        self._epoch += 1
        self._connected = True
        logger.info(
            "Connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        options = SubscribeOptions(qos=1)
        share_group = self._ingest.share_group
        client.subscribe([(f, options) for f in subscription_filters(share_group)])
        # After the new filter, so that no message finds the session without a subscription.
        client.unsubscribe(legacy_subscription_filters(share_group))

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        _flags: Any,  # noqa: ANN401 - paho's DisconnectFlags
        reason_code: Any,  # noqa: ANN401 - paho's ReasonCode
        _properties: Any,  # noqa: ANN401 - paho's Properties
    ) -> None:
        self._connected = False
        if not self._paused:
            logger.warning("Disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        message: mqtt.MQTTMessage,
    ) -> None:
        if self._paused:
            return
        if not self._slots.acquire(blocking=False):
            waited_from = time.monotonic()
            while not self._slots.acquire(timeout=_BACKPRESSURE_POLL_S):
                if self._paused:
                    return
            metrics.BACKPRESSURE_SECONDS.inc(time.monotonic() - waited_from)
        with self._held_lock:
            self._held += 1
            if self._held > self._peak:
                self._peak = self._held
                metrics.BUFFER_PEAK.set(self._peak)
        metrics.MESSAGES_DELIVERED.inc()
        raw = RawMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            mid=message.mid,
            received_at=time.time(),
            epoch=self._epoch,
        )
        self._loop.call_soon_threadsafe(self._deliver, raw)
