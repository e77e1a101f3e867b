"""A simulated site gateway: one MQTT connection that publishes, buffers and forwards for devices.

Device status and the last will: a will belongs to a connection, and one gateway connection
speaks for many devices, so a will can cover only one device's status topic. The gateway
therefore publishes every device's retained ``{"online": true}`` after each connect and every
device's retained ``{"online": false}`` on a clean shutdown; its will marks one device offline:
the *will device*, by default the factory's first power meter (in a real installation the
gateway is wired to it). If the gateway dies, its other devices turn offline by staleness (no
reading for 90 s), as the ``online_rate`` signal defines. The will carries no ``ts``: it is
composed at connect time, so ingest dates it at receipt instead.

Store-and-forward: while the connection is down, or during a simulated outage, samples wait
in a bounded buffer (oldest dropped first, counted). Once the gateway can send again it
publishes everything pending, per device, as JSON arrays of up to 1000 samples and at most
64 KiB, as a real gateway flushes after a network outage. Messages already handed to paho
when the connection drops stay in paho's own queue and are re-sent after the reconnect.

Backlog: ``forward`` publishes older samples (the simulator's history, see
``simulators.history``) beside the live ones, outside the live buffer; its caller offers
more only while ``has_backlog_room`` says few messages are unacknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas.telemetry import (
    MAX_PAYLOAD_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    MetricValue,
    StatusMessage,
    TelemetrySample,
    encode_samples,
    encode_status,
    status_topic,
    telemetry_topic,
)

logger = logging.getLogger(__name__)

QOS = 1
# Samples a gateway keeps while it cannot send: a factory of 300 devices sampled every 5 s
# fits ~55 min; a longer outage loses the oldest samples (counted), not the gateway's memory.
DEFAULT_BUFFER_LIMIT = 200_000
# Messages paho may hold (in flight or queued). Beyond it publish() refuses and the samples
# stay in our buffer, so the bound is ours to count; paho's default is unbounded.
DEFAULT_MAX_QUEUED_MESSAGES = 5_000
# Unacknowledged QoS 1 messages on the wire. It must not exceed the broker's Receive Maximum
# (MQTT 5, section 3.3.4): Mosquitto announces 20, its default max_inflight_messages. paho cannot
# change it on an established connection, so a smaller announced value is only logged.
DEFAULT_MAX_INFLIGHT = 20


class MqttProtocol(StrEnum):
    """MQTT protocol version of the gateway's connection."""

    V5 = "5"
    V311 = "3.1.1"


@dataclass(frozen=True, slots=True)
class OutageSchedule:
    """A simulated network outage of ``duration_s`` every ``every_s``, shifted by ``phase_s``."""

    every_s: float
    duration_s: float
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        """Refuse a schedule that is never or always out."""
        if self.every_s <= 0 or not 0 < self.duration_s < self.every_s:
            raise ValueError("an outage needs 0 < duration_s < every_s")

    def active(self, elapsed_s: float) -> bool:
        """Return whether the network is out ``elapsed_s`` seconds after the gateway started."""
        shifted = elapsed_s - self.phase_s
        return shifted >= 0 and shifted % self.every_s >= self.every_s - self.duration_s


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where and how a gateway connects; see the module constants for the bounds."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: MqttProtocol = MqttProtocol.V5
    # Client ids are this prefix plus the factory id: the simulator credential's prefix.
    client_id_prefix: str = "parksense.simulator."
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES
    max_inflight: int = DEFAULT_MAX_INFLIGHT


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """Counters of one gateway; telemetry counts are of messages handed to paho."""

    telemetry_messages: int
    samples: int
    readings: int
    flushed_messages: int
    sent_messages: int
    acked_messages: int
    buffered: int
    dropped: int
    connects: int
    connected: bool
    in_outage: bool

    @property
    def unacked(self) -> int:
        """Return messages handed to paho that the broker has not yet acknowledged."""
        return self.sent_messages - self.acked_messages


class Gateway:
    """One MQTT connection that publishes telemetry and status for the devices of a factory."""

    def __init__(
        self,
        park_id: str,
        factory_id: str,
        device_ids: Sequence[str],
        settings: GatewaySettings,
        *,
        will_device_id: str | None = None,
        outage: OutageSchedule | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare the connection; ``start`` opens it.

        Args:
            park_id: the park of the factory.
            factory_id: the factory; also names the MQTT client id.
            device_ids: the devices this gateway speaks for.
            settings: broker address and bounds.
            will_device_id: the device whose status the last will covers (default: the
                first device).
            outage: optional simulated network outages.
            clock: monotonic seconds, for the outage schedule.
        """
        if not device_ids:
            raise ValueError("a gateway needs at least one device")
        self.park_id = park_id
        self.factory_id = factory_id
        self.device_ids = list(device_ids)
        self.settings = settings
        self._topics = {d: telemetry_topic(park_id, factory_id, d) for d in self.device_ids}
        self._seq = dict.fromkeys(self.device_ids, 0)
        self._will_device_id = will_device_id or self.device_ids[0]
        if self._will_device_id not in self._topics:
            raise ValueError(f"will device {self._will_device_id!r} is not one of the gateway's")
        self._outage = outage
        self._clock = clock
        self._started_at = clock()
        self._was_out = False
        self._dropping = False
        # _lock guards the buffer and is held across paho publish calls; _stats_lock guards
        # counters and is never held across a paho call, because paho runs on_publish while
        # holding its own message lock.
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._buffer: deque[tuple[str, TelemetrySample]] = deque()
        self._connected = threading.Event()
        self._stopping = False
        self._counts = dict.fromkeys(
            (
                "telemetry_messages",
                "samples",
                "readings",
                "flushed_messages",
                "sent_messages",
                "acked_messages",
                "dropped",
                "connects",
            ),
            0,
        )
        self._client = self._make_client()

    @property
    def client_id(self) -> str:
        """Return the MQTT client id."""
        return f"{self.settings.client_id_prefix}{self.factory_id}"

    def _make_client(self) -> mqtt.Client:
        protocol = mqtt.MQTTv5 if self.settings.protocol is MqttProtocol.V5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol
        )
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        client.reconnect_delay_set(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        client.max_queued_messages_set(self.settings.max_queued_messages)
        client.max_inflight_messages_set(self.settings.max_inflight)
        # No ts: the will takes effect long after it is composed; ingest dates it at receipt.
        will = StatusMessage(online=False)
        client.will_set(
            status_topic(self.park_id, self.factory_id, self._will_device_id),
            encode_status(will),
            qos=QOS,
            retain=True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        """Connect in the background; paho's network thread reconnects with backoff."""
        logger.info(
            "Gateway %s connecting to %s:%d for %d devices",
            self.client_id,
            self.settings.host,
            self.settings.port,
            len(self.device_ids),
        )
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
        )
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the connection; return whether it is up."""
        return self._connected.wait(timeout_s)

    @property
    def in_outage(self) -> bool:
        """Return whether a simulated outage is under way."""
        return self._outage is not None and self._outage.active(self._clock() - self._started_at)

    def submit(
        self, ts: datetime | int, readings: Iterable[tuple[str, Mapping[str, MetricValue]]]
    ) -> None:
        """Queue one sample per device measured at ``ts`` and send whatever can be sent.

        Raises:
            ValueError: a device is not one of this gateway's.
        """
        samples = []
        for device_id, metrics in readings:
            if device_id not in self._seq:
                raise ValueError(f"device {device_id!r} is not behind gateway {self.client_id}")
            seq = self._seq[device_id]
            self._seq[device_id] = seq + 1
            samples.append((device_id, TelemetrySample(ts=ts, seq=seq, metrics=dict(metrics))))
        with self._lock:
            self._buffer.extend(samples)
            dropped = len(self._buffer) - self.settings.buffer_limit
            if dropped > 0:
                for _ in range(dropped):
                    self._buffer.popleft()
                self._count("dropped", dropped)
                if not self._dropping:
                    self._dropping = True
                    logger.warning(
                        "Gateway %s buffer full (%d samples): dropping the oldest",
                        self.client_id,
                        self.settings.buffer_limit,
                    )
            self._drain_locked()

    def flush(self) -> int:
        """Send pending samples now if the gateway can; return how many were handed to paho."""
        with self._lock:
            return self._drain_locked()

    def has_backlog_room(self, max_unacked: int) -> bool:
        """Return whether backlog may be forwarded now: connected, not out, few unacknowledged."""
        return (
            self._connected.is_set()
            and not self.in_outage
            and not self._stopping
            and self.stats().unacked < max_unacked
        )

    def forward(self, device_id: str, samples: list[TelemetrySample]) -> int:
        """Publish a device's backlog (older samples) as arrays; return how many paho took.

        The samples bypass the live buffer, so its bound and order stay the live data's;
        the caller keeps what was not taken and offers it again.

        Raises:
            ValueError: the device is not one of this gateway's.
        """
        if device_id not in self._topics:
            raise ValueError(f"device {device_id!r} is not behind gateway {self.client_id}")
        with self._lock:
            if self._stopping or self.in_outage or not self._connected.is_set():
                return 0
            return self._publish_device(device_id, samples)

    def _drain_locked(self) -> int:
        out = self.in_outage
        if out != self._was_out:
            self._was_out = out
            logger.info(
                "Gateway %s simulated outage %s (%d samples buffered)",
                self.client_id,
                "began" if out else "ended",
                len(self._buffer),
            )
        if out or not self._connected.is_set() or not self._buffer:
            return 0
        self._dropping = False
        by_device: dict[str, list[TelemetrySample]] = {}
        for device_id, sample in self._buffer:
            by_device.setdefault(device_id, []).append(sample)
        self._buffer.clear()
        sent = 0
        for index, (device_id, samples) in enumerate(by_device.items()):
            done = self._publish_device(device_id, samples)
            sent += done
            if done < len(samples):
                # paho's queue is full: keep the rest, in order, for the next drain.
                rest = [(device_id, s) for s in samples[done:]]
                rest += [(d, s) for d, ss in list(by_device.items())[index + 1 :] for s in ss]
                self._buffer.extendleft(reversed(rest))
                break
        return sent

    def _publish_device(self, device_id: str, samples: list[TelemetrySample]) -> int:
        topic = self._topics[device_id]
        done = 0
        for chunk in _chunks(samples):
            payload = _encode_within_limit(chunk)
            for part, data in payload:
                info = self._client.publish(topic, data, qos=QOS)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    return done
                # MQTT_ERR_NO_CONN still leaves the message in paho's queue for the reconnect.
                self._count("sent_messages", 1)
                self._count("telemetry_messages", 1)
                self._count("samples", len(part))
                self._count("readings", sum(len(s.metrics) for s in part))
                if len(part) > 1:
                    self._count("flushed_messages", 1)
                done += len(part)
        return done

    def _count(self, name: str, amount: int) -> None:
        with self._stats_lock:
            self._counts[name] += amount

    def _publish_statuses(self, *, online: bool) -> None:
        payload = encode_status(StatusMessage(online=online, ts=datetime.now(UTC)))
        for device_id in self.device_ids:
            topic = status_topic(self.park_id, self.factory_id, device_id)
            info = self._client.publish(topic, payload, qos=QOS, retain=True)
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._count("sent_messages", 1)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        del client, userdata, flags
        if reason_code.is_failure:
            logger.warning("Gateway %s connection refused: %s", self.client_id, reason_code)
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum < self.settings.max_inflight:
            logger.warning(
                "Gateway %s: broker's Receive Maximum %d is below max_inflight %d",
                self.client_id,
                receive_maximum,
                self.settings.max_inflight,
            )
        self._count("connects", 1)
        logger.info("Gateway %s connected", self.client_id)
        self._connected.set()
        with self._lock:
            if not self._stopping:
                self._publish_statuses(online=True)
                self._drain_locked()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        del client, userdata, flags, properties
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            logger.info("Gateway %s disconnected", self.client_id)
        elif was_connected:
            logger.warning(
                "Gateway %s lost its connection (%s); buffering and reconnecting",
                self.client_id,
                reason_code,
            )

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        del client, userdata, mid, properties
        if reason_code.is_failure:
            logger.warning("Gateway %s: broker refused a message: %s", self.client_id, reason_code)
        self._count("acked_messages", 1)

    def stats(self) -> GatewayStats:
        """Return a snapshot of the gateway's counters."""
        with self._lock:
            buffered = len(self._buffer)
        with self._stats_lock:
            counts = dict(self._counts)
        return GatewayStats(
            **counts,
            buffered=buffered,
            connected=self._connected.is_set(),
            in_outage=self.in_outage,
        )

    def stop(self, timeout_s: float = 10.0) -> int:
        """Flush, publish every device offline, wait for acknowledgements, disconnect.

        Args:
            timeout_s: how long to wait for the broker to acknowledge what is in flight.

        Returns:
            The samples and messages not delivered: still buffered, or never acknowledged.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stopping = True
            if self._connected.is_set():
                # A clean shutdown ends any simulated outage: deliver what is pending.
                self._outage = None
                self._drain_locked()
                self._publish_statuses(online=False)
        while self.stats().unacked > 0 and self._connected.is_set():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()
        stats = self.stats()
        lost = stats.buffered + max(0, stats.unacked)
        if lost:
            logger.warning(
                "Gateway %s stopped with %d samples buffered and %d messages unacknowledged",
                self.client_id,
                stats.buffered,
                stats.unacked,
            )
        return lost


def _chunks(samples: list[TelemetrySample]) -> Iterable[list[TelemetrySample]]:
    for start in range(0, len(samples), MAX_SAMPLES_PER_MESSAGE):
        yield samples[start : start + MAX_SAMPLES_PER_MESSAGE]


def _encode_within_limit(
    samples: list[TelemetrySample],
) -> list[tuple[list[TelemetrySample], bytes]]:
    """Encode ``samples`` as one message, or split in halves until each fits in 64 KiB."""
    data = encode_samples(samples)
    if len(data) <= MAX_PAYLOAD_BYTES or len(samples) == 1:
        return [(samples, data)]
    middle = len(samples) // 2
    return _encode_within_limit(samples[:middle]) + _encode_within_limit(samples[middle:])
