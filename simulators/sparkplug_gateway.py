"""A simulated factory gateway that speaks Sparkplug B as the factory's edge node.

It has the publishing interface of ``simulators.publisher.Gateway`` (start, submit, flush,
stats, stop), so ``--protocol sparkplug`` swaps it in for some or all factories. It behaves
as the specification asks an edge node to: on every connect an NBIRTH (``bdSeq`` of the
session, ``seq`` 0) and a DBIRTH per device declaring each metric's alias, with the NDEATH
of the same ``bdSeq`` as its will; then alias-only DDATA, one per device and sample, with
the node's ``seq`` counting 0..255; on an NCMD ``Node Control/Rebirth`` the births again;
on a clean stop a DDEATH per device and the NDEATH. Births and data go at QoS 0, as
Sparkplug has them; what is sampled while the gateway is not connected is counted as
dropped (Sparkplug leaves store-and-forward to the historian, which this is not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas.sparkplug_b_pb2 import Payload
from schemas.telemetry import MetricValue
from services.core.sparkplug_payload import (
    BD_SEQ_METRIC,
    NAMESPACE,
    REBIRTH_METRIC,
    SEQ_MODULUS,
    DataType,
    MessageType,
)
from simulators.publisher import GatewaySettings, GatewayStats

logger = logging.getLogger(__name__)

# Sparkplug B: births, data and deaths at QoS 0; commands are received at QoS 1.
QOS = 0
COMMAND_QOS = 1


def _ms(ts: datetime | int) -> int:
    return ts if isinstance(ts, int) else int(ts.astimezone(UTC).timestamp() * 1000)


def _set_value(metric: Payload.Metric, value: MetricValue) -> None:
    if isinstance(value, bool):
        metric.datatype, metric.boolean_value = DataType.BOOLEAN, value
    elif isinstance(value, str):
        metric.datatype, metric.string_value = DataType.STRING, value
    else:
        metric.datatype, metric.double_value = DataType.DOUBLE, float(value)


class SparkplugGateway:
    """One MQTT connection: the edge node of a factory and the devices behind it."""

    def __init__(
        self,
        park_id: str,
        factory_id: str,
        device_metrics: Mapping[str, Sequence[str]],
        settings: GatewaySettings,
        *,
        first_bd_seq: int = 0,
    ) -> None:
        """Prepare the edge node; ``start`` connects.

        Args:
            park_id: the park (the Sparkplug group).
            factory_id: the factory (the edge node); also names the MQTT client id.
            device_metrics: each device's metric names, in the order aliases are given.
            settings: broker address and credential (MQTT 3.1.1 is used, as Sparkplug
                requires every edge node to support).
            first_bd_seq: the bdSeq of the first session; each reconnect counts on.
        """
        if not device_metrics:
            raise ValueError("a gateway needs at least one device")
        self.park_id = park_id
        self.factory_id = factory_id
        self.device_ids = list(device_metrics)
        self.settings = settings
        self._aliases = {
            device_id: {name: alias for alias, name in enumerate(names, start=1)}
            for device_id, names in device_metrics.items()
        }
        self._values: dict[str, dict[str, MetricValue]] = {d: {} for d in self.device_ids}
        self._bd_seq = first_bd_seq % SEQ_MODULUS
        self._seq = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self._counts = dict.fromkeys(
            ("telemetry_messages", "samples", "readings", "sent_messages", "dropped", "connects"),
            0,
        )
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311
        )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        self._client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.message_callback_add(self._topic(MessageType.NCMD), self._on_command)
        self._set_will()

    @property
    def client_id(self) -> str:
        """Return the MQTT client id."""
        return f"{self.settings.client_id_prefix}{self.factory_id}"

    def _topic(self, kind: MessageType, device_id: str | None = None) -> str:
        tail = f"/{device_id}" if device_id else ""
        return f"{NAMESPACE}/{self.park_id}/{kind.value}/{self.factory_id}{tail}"

    def _node_payload(self, *, birth: bool) -> bytes:
        now = _ms(datetime.now(UTC))
        payload = Payload(timestamp=now)
        payload.metrics.add(
            name=BD_SEQ_METRIC, timestamp=now, datatype=DataType.INT64, long_value=self._bd_seq
        )
        if birth:
            payload.seq = self._next_seq()
            payload.metrics.add(
                name=REBIRTH_METRIC, timestamp=now, datatype=DataType.BOOLEAN, boolean_value=False
            )
        return payload.SerializeToString()

    def _set_will(self) -> None:
        self._client.will_set(
            self._topic(MessageType.NDEATH), self._node_payload(birth=False), qos=QOS
        )

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % SEQ_MODULUS
        return seq

    def start(self) -> None:
        """Connect in the background; paho's network thread reconnects with backoff."""
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
        )
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the connection; return whether it is up."""
        return self._connected.wait(timeout_s)

    def submit(
        self, ts: datetime | int, readings: Iterable[tuple[str, Mapping[str, MetricValue]]]
    ) -> None:
        """Publish one DDATA per device measured at ``ts`` (aliases only where declared).

        Raises:
            ValueError: a device is not one of this gateway's.
        """
        stamp = _ms(ts)
        with self._lock:
            for device_id, metrics in readings:
                aliases = self._aliases.get(device_id)
                if aliases is None:
                    raise ValueError(f"device {device_id!r} is not behind {self.client_id}")
                self._values[device_id].update(metrics)
                if not self._connected.is_set():
                    self._count("dropped", 1)
                    continue
                payload = Payload(timestamp=stamp, seq=self._next_seq())
                for name, value in metrics.items():
                    metric = payload.metrics.add(timestamp=stamp)
                    if name in aliases:
                        metric.alias = aliases[name]
                    else:
                        metric.name = name  # not in the birth (deliberately bad data)
                    _set_value(metric, value)
                self._publish(self._topic(MessageType.DDATA, device_id), payload)
                self._count("telemetry_messages", 1)
                self._count("samples", 1)
                self._count("readings", len(metrics))

    def flush(self) -> int:
        """Nothing waits: Sparkplug data is sent at once or dropped; returns 0."""
        return 0

    def _publish(self, topic: str, payload: Payload) -> None:
        self._client.publish(topic, payload.SerializeToString(), qos=QOS)
        self._count("sent_messages", 1)

    def _births_locked(self) -> None:
        """NBIRTH, then a DBIRTH per device with its aliases and last values."""
        self._seq = 0
        self._client.publish(
            self._topic(MessageType.NBIRTH), self._node_payload(birth=True), qos=QOS
        )
        self._count("sent_messages", 1)
        now = _ms(datetime.now(UTC))
        for device_id, aliases in self._aliases.items():
            payload = Payload(timestamp=now, seq=self._next_seq())
            for name, alias in aliases.items():
                metric = payload.metrics.add(name=name, alias=alias, timestamp=now)
                value = self._values[device_id].get(name)
                if value is None:
                    metric.datatype, metric.is_null = DataType.DOUBLE, True
                else:
                    _set_value(metric, value)
            self._publish(self._topic(MessageType.DBIRTH, device_id), payload)

    def _count(self, name: str, amount: int) -> None:
        self._counts[name] += amount

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        del userdata, flags, properties
        if reason_code.is_failure:
            logger.warning("Edge node %s connection refused: %s", self.client_id, reason_code)
            return
        client.subscribe(self._topic(MessageType.NCMD), qos=COMMAND_QOS)
        with self._lock:
            self._count("connects", 1)
            self._births_locked()
            # The next session's will carries the next bdSeq (set now, used at reconnect).
            self._bd_seq = (self._bd_seq + 1) % SEQ_MODULUS
            self._set_will()
            self._bd_seq = (self._bd_seq - 1) % SEQ_MODULUS
            self._connected.set()
        logger.info("Edge node %s born (bdSeq %d)", self.client_id, self._bd_seq)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        del client, userdata, flags, properties
        self._connected.clear()
        with self._lock:
            self._bd_seq = (self._bd_seq + 1) % SEQ_MODULUS  # the will of this session was sent
        if not self._stopping:
            logger.warning("Edge node %s lost its connection (%s)", self.client_id, reason_code)

    def _on_command(
        self,
        client: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        message: mqtt.MQTTMessage,
    ) -> None:
        del client, userdata
        command = Payload()
        try:
            command.ParseFromString(bytes(message.payload))
        except DecodeError:
            logger.warning("Edge node %s: unreadable NCMD", self.client_id)
            return
        if any(m.name == REBIRTH_METRIC and m.boolean_value for m in command.metrics):
            logger.info("Edge node %s: Rebirth requested", self.client_id)
            with self._lock:
                if self._connected.is_set():
                    self._births_locked()

    def stats(self) -> GatewayStats:
        """Return a snapshot of the gateway's counters (QoS 0: nothing waits for an ack)."""
        with self._lock:
            counts = dict(self._counts)
        return GatewayStats(
            telemetry_messages=counts["telemetry_messages"],
            samples=counts["samples"],
            readings=counts["readings"],
            flushed_messages=0,
            sent_messages=counts["sent_messages"],
            acked_messages=counts["sent_messages"],
            buffered=0,
            dropped=counts["dropped"],
            connects=counts["connects"],
            connected=self._connected.is_set(),
            in_outage=False,
        )

    def stop(self, timeout_s: float = 10.0) -> int:
        """Publish each device's DDEATH and the NDEATH, then disconnect; returns 0."""
        with self._lock:
            self._stopping = True
            if self._connected.is_set():
                now = _ms(datetime.now(UTC))
                for device_id in self.device_ids:
                    death = Payload(timestamp=now, seq=self._next_seq())
                    self._publish(self._topic(MessageType.DDEATH, device_id), death)
                info = self._client.publish(
                    self._topic(MessageType.NDEATH), self._node_payload(birth=False), qos=QOS
                )
                deadline = time.monotonic() + timeout_s
                while not info.is_published() and time.monotonic() < deadline:
                    time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()
        return 0
