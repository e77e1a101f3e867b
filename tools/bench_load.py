"""The benchmark's load: MQTT connections publishing timestamped batches at QoS 1."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas.telemetry import TelemetrySample, encode_samples
from services.core.access import CredentialKind, client_id, username

logger = logging.getLogger(__name__)

METRICS_PER_SAMPLE = 3  # env_sensor: temp_c, humidity_pct, pm25_ugm3
# Mosquitto announces a Receive Maximum of 20 (MQTT 5, section 3.3.4); more in flight per
# connection would break the contract, so throughput comes from several connections.
MAX_INFLIGHT = 20
# Messages a publisher may have handed to paho without a PUBACK: bounds paho's queue.
MAX_OUTSTANDING = 1000
# Bounds of the waits: PUBACKs after the last publish, and the connection at start.
ACK_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class BenchError(Exception):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What one publisher connection does: where, which topics, how fast and until when."""

    index: int
    host: str
    port: int
    username: str | None
    password: str | None
    topics: list[str]
    batch: int
    rate_msg_s: float | None
    deadline: float
    since_ms: int


class Publisher(threading.Thread):
    """One MQTT connection publishing batches round-robin over its devices until a deadline."""

    def __init__(self, plan: LoadPlan) -> None:
        """Prepare the thread; ``start`` connects and publishes."""
        super().__init__(name=f"bench-publisher-{plan.index}", daemon=True)
        self.plan = plan
        self.sent = 0
        self.acked = 0
        self.refused = 0
        self.error: str | None = None
        self._cond = threading.Condition()
        self._connected = threading.Event()

    def run(self) -> None:
        """Publish; a failure is recorded for the report rather than raised in a thread."""
        try:
            self._run()
        except Exception as exc:
            logger.exception("Publisher %d failed", self.plan.index)
            self.error = f"{type(exc).__name__}: {exc}"

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        del client, userdata, flags, properties
        if not reason.is_failure:
            self._connected.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        del client, userdata, mid, properties
        with self._cond:
            self.acked += 1
            self.refused += reason.is_failure
            self._cond.notify()

    def _run(self) -> None:
        plan = self.plan
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id(
                plan.username or username(CredentialKind.PLATFORM, "simulator"),
                f"bench-{os.getpid()}-{plan.index}",
            ),
            protocol=mqtt.MQTTv5,
        )
        if plan.username is not None:
            client.username_pw_set(plan.username, plan.password)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.connect(plan.host, plan.port, keepalive=30)
        client.loop_start()
        try:
            if not self._connected.wait(CONNECT_TIMEOUT_S):
                raise BenchError(f"no CONNACK from {plan.host}:{plan.port}")
            self._publish_until_deadline(client)
            ack_deadline = time.monotonic() + ACK_TIMEOUT_S
            with self._cond:
                while self.acked < self.sent and time.monotonic() < ack_deadline:
                    self._cond.wait(0.2)
        finally:
            client.disconnect()
            client.loop_stop()

    def _publish_until_deadline(self, client: mqtt.Client) -> None:
        plan = self.plan
        # No sample before the run's start, so that the run's readings are those with ts >= it.
        last_ms = [plan.since_ms - 1] * len(plan.topics)
        started = time.monotonic()
        while (now := time.monotonic()) < plan.deadline:
            if plan.rate_msg_s is not None:
                due = started + self.sent / plan.rate_msg_s
                if due > now:
                    time.sleep(min(due, plan.deadline) - now)
                    continue
            with self._cond:
                while self.sent - self.acked >= MAX_OUTSTANDING:
                    if time.monotonic() >= plan.deadline:
                        return
                    self._cond.wait(0.05)
            k = self.sent % len(plan.topics)
            # ts is the publish time; the samples of a batch are 1 ms apart and never repeat
            # a device's earlier ts, since a reading's identity is (device, metric, ts).
            first_ms = max(time.time_ns() // 1_000_000 - plan.batch + 1, last_ms[k] + 1)
            last_ms[k] = first_ms + plan.batch - 1
            samples = [
                TelemetrySample(
                    ts=first_ms + j,
                    metrics={
                        "temp_c": 15.0 + (self.sent + j) % 200 / 10,
                        "humidity_pct": 40.0 + (self.sent + j) % 30,
                        "pm25_ugm3": 20.0 + (self.sent + j) % 50,
                    },
                )
                for j in range(plan.batch)
            ]
            info = client.publish(plan.topics[k], encode_samples(samples), qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise BenchError(f"publish failed: {mqtt.error_string(info.rc)}")
            with self._cond:
                self.sent += 1
