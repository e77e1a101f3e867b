"""The load of ``parksense bench-peers`` (issue 10): its fleet, device type and messages.

200 devices over 4 parks x 5 factories, one device type with five metrics, one QoS 1
message per device per simulated second carrying all five, round-robin over the devices.
Everything here is pure: the shell builds the packets before the clock starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas.fleet import Device, DeviceType, Factory, Fleet, MetricKind, MetricSpec, Park
from schemas.telemetry import telemetry_topic
from tools.mqtt_packets import packet_id_of, publish_packet

PARKS = 4
FACTORIES_PER_PARK = 5
DEVICES = 200
MESSAGES = 300_000
DEVICE_TYPE = "peerbench_unit"
PARK_PREFIX = "peerbench-p"
DEVICE_PREFIX = "peerbench-d"
METRICS = ("power_kw", "energy_kwh", "state", "temp_c", "output_units")
STATES = ("running", "idle", "fault", "stopped")
SIMULATED_STEP_MS = 1000


def device_type() -> DeviceType:
    """Return the bench's device type: five metrics, no range, so nothing is refused."""
    return DeviceType(
        id=DEVICE_TYPE,
        description="bench-peers load: five metrics per message",
        metrics={
            "power_kw": MetricSpec(kind=MetricKind.GAUGE, unit="kW"),
            "energy_kwh": MetricSpec(kind=MetricKind.COUNTER, unit="kWh"),
            "state": MetricSpec(kind=MetricKind.STATE, states=list(STATES)),
            "temp_c": MetricSpec(kind=MetricKind.GAUGE, unit="°C"),
            "output_units": MetricSpec(kind=MetricKind.COUNTER, unit="units"),
        },
    )


def bench_fleet(devices: int = DEVICES) -> Fleet:
    """Return the fleet: ``devices`` spread evenly over 4 parks x 5 factories."""
    factories = PARKS * FACTORIES_PER_PARK
    parks = []
    for p in range(PARKS):
        park_factories = []
        for f in range(FACTORIES_PER_PARK):
            index = p * FACTORIES_PER_PARK + f
            ids = range(index, devices, factories)
            park_factories.append(
                Factory(
                    id=f"peerbench-f{index + 1:02d}",
                    name=f"Bench factory {index + 1}",
                    industry="benchmark",
                    devices=[
                        Device(id=f"{DEVICE_PREFIX}{n + 1:04d}", type=DEVICE_TYPE) for n in ids
                    ],
                )
            )
        parks.append(
            Park(
                id=f"{PARK_PREFIX}{p + 1}",
                name=f"Bench park {p + 1}",
                city="Localhost",
                factories=park_factories,
            )
        )
    return Fleet(device_types=[device_type()], parks=parks)


def device_topics(fleet: Fleet) -> list[str]:
    """Return the telemetry topic of every device, in device-id order (the round-robin)."""
    pairs = [
        (d.id, telemetry_topic(p.id, f.id, d.id))
        for p in fleet.parks
        for f in p.factories
        for d in f.devices
    ]
    return [topic for _, topic in sorted(pairs)]


@dataclass(frozen=True, slots=True)
class LoadWindow:
    """Where one run's messages lie: ``count`` messages, the first at ``start_ms``."""

    start_ms: int
    count: int
    devices: int

    @property
    def simulated_s(self) -> int:
        """Simulated seconds the run covers (one message per device per second)."""
        return -(-self.count // self.devices)

    @property
    def end_ms(self) -> int:
        """The first millisecond after the run's last timestamp."""
        return self.start_ms + self.simulated_s * SIMULATED_STEP_MS


def sample(index: int, devices: int, start_ms: int) -> tuple[int, int, dict[str, object]]:
    """Return the device, ts (epoch ms) and body of message ``index`` (from 0) of a run.

    Message ``index`` goes to device ``index % devices`` at simulated second
    ``index // devices``; counters only grow, the state cycles slowly.
    """
    device, second = index % devices, index // devices
    ts = start_ms + second * SIMULATED_STEP_MS
    body: dict[str, object] = {
        "ts": ts,
        "seq": second,
        "metrics": {
            "power_kw": round(50.0 + (device * 7 + second) % 400 / 4, 2),
            "energy_kwh": round(1000.0 + device + second * 0.014, 3),
            "state": STATES[(device + second // 300) % len(STATES)],
            "temp_c": round(20.0 + (device + second) % 150 / 10, 1),
            "output_units": device * 10 + second,
        },
    }
    return device, ts, body


def message_packets(topics: list[str], window: LoadWindow, *, with_topic: bool) -> list[bytes]:
    """Return the PUBLISH packets of a run, in publish order.

    Args:
        topics: One telemetry topic per device (``device_topics``).
        window: Where the run's timestamps lie.
        with_topic: Add ``"topic"`` to the JSON, for a peer that cannot see the MQTT topic.
    """
    packets = []
    for i in range(window.count):
        device, _, body = sample(i, len(topics), window.start_ms)
        if with_topic:
            body["topic"] = topics[device]
        packets.append(publish_packet(topics[device], orjson.dumps(body), packet_id_of(i)))
    return packets


def paced_packets(topics: list[str], start_ms: int, count: int, rate_per_s: float) -> list[bytes]:
    """Return the PUBLISH packets of a paced run: message i is measured at start + i / rate.

    Device ``i % len(topics)``, the same body as ``sample`` but with that timestamp, so a
    reading's measured time is when the publisher sends it.
    """
    packets = []
    for i in range(count):
        device, _, body = sample(i, len(topics), start_ms)
        body["ts"] = start_ms + round(i * 1000 / rate_per_s)
        packets.append(publish_packet(topics[device], orjson.dumps(body), packet_id_of(i)))
    return packets
