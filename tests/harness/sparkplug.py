"""A Sparkplug B edge node for tests: pysparkplug's EdgeNode as a factory's gateway.

pysparkplug (an implementation no one here wrote) births the node and its devices, keeps
seq and bdSeq, sets the NDEATH will and decodes our Rebirth command. What it has no call
for is reached through its own payload classes: alias-only DDATA (its devices always send
names), a skipped seq, an NDEATH with a chosen bdSeq, and an abrupt death (the socket closed
under it, so the broker publishes its will).
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho_mqtt
import psycopg
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from pysparkplug import (
    Client,
    DataType,
    DData,
    Device,
    EdgeNode,
    Message,
    MessageType,
    Metric,
    NDeath,
    QoS,
    Topic,
    get_current_timestamp,
)

logger = logging.getLogger(__name__)

# The aliases each device's DBIRTH declares.
METER_ALIASES = {"power_kw": 1, "energy_kwh": 2}
LINE_ALIASES = {"state": 1, "output_units": 2, "speed_upm": 3}
_TYPES = {
    "power_kw": DataType.DOUBLE,
    "energy_kwh": DataType.DOUBLE,
    "state": DataType.STRING,
    "output_units": DataType.INT64,
    "speed_upm": DataType.FLOAT,
}


@dataclass
class EdgeSite:
    """One park, one factory with a power meter and a production line."""

    prefix: str
    park: str = field(init=False)
    factory: str = field(init=False)
    meter: str = field(init=False)
    line: str = field(init=False)

    def __post_init__(self) -> None:
        """Derive the ids from the prefix."""
        self.park = f"{self.prefix}-park"
        self.factory = f"{self.prefix}-f1"
        self.meter = f"{self.prefix}-meter"
        self.line = f"{self.prefix}-line"

    def fleet_yaml(self) -> str:
        """The fleet file."""
        return (
            f"parks:\n  - id: {self.park}\n    factories:\n      - id: {self.factory}\n"
            f"        devices:\n          - {{id: {self.meter}, type: power_meter}}\n"
            f"          - {{id: {self.line}, type: production_line,"
            " capacity_units_per_hour: 3600}\n"
        )


def metric(
    name: str, value: Any, aliases: dict[str, int], *, named: bool = True, ts: int | None = None
) -> Metric:
    """A metric of our devices, by name and alias (alias only when ``named`` is False)."""
    return Metric(
        timestamp=get_current_timestamp() if ts is None else ts,
        name=name if named else None,
        alias=aliases[name],
        datatype=_TYPES[name],
        value=value,
    )


class Paho2Client(Client):
    """pysparkplug's MQTT client on paho 2, whose version-1 callback API it uses unchanged.

    Only its constructor needs replacing: it calls ``message_retry_set``, which paho 2
    removed (QoS 1 retries are the broker's business there). Everything else (connect with
    births, publish, subscribe and decode) is pysparkplug's own.
    """

    def __init__(self, client_id: str, username: str, password: str) -> None:  # noqa: D107
        self._client = paho_mqtt.Client(
            CallbackAPIVersion.VERSION1,
            client_id=client_id,
            clean_session=True,
            protocol=paho_mqtt.MQTTv311,
        )
        self._client.enable_logger(logger)
        self._client.username_pw_set(username, password)
        self._births = {}
        self._subscriptions = {}


class Gateway:
    """The site's factory gateway as a pysparkplug edge node with two devices."""

    def __init__(self, site: EdgeSite, host: str, port: int, credential: dict[str, Any]) -> None:
        """Prepare the edge node (``connect`` births it)."""
        self.site = site
        self.host = host
        self.port = port
        self.commands: list[Message] = []
        self._dead = False
        client = Paho2Client(
            client_id=f"{credential['client_id_prefix']}{uuid.uuid4().hex[:8]}",
            username=credential["username"],
            password=credential["password"],
        )
        self.node = EdgeNode(
            group_id=site.park,
            edge_node_id=site.factory,
            metrics=[],
            client=client,
            cmd_callback=self._on_command,
        )
        self.node.register(Device(site.meter, self.meter_metrics(10.0, 100.0)))
        self.node.register(Device(site.line, self.line_metrics("running", 0, 50.0)))

    @staticmethod
    def meter_metrics(power_kw: float, energy_kwh: float) -> list[Metric]:
        """The meter's metrics, named and aliased, as its DBIRTH carries them."""
        return [
            metric("power_kw", power_kw, METER_ALIASES),
            metric("energy_kwh", energy_kwh, METER_ALIASES),
        ]

    @staticmethod
    def line_metrics(state: str, output_units: int, speed_upm: float) -> list[Metric]:
        """The line's metrics, named and aliased, as its DBIRTH carries them."""
        return [
            metric("state", state, LINE_ALIASES),
            metric("output_units", output_units, LINE_ALIASES),
            metric("speed_upm", speed_upm, LINE_ALIASES),
        ]

    def _on_command(self, _node: EdgeNode, message: Message) -> None:
        self.commands.append(message)

    def rebirth_requested(self) -> bool:
        """Whether an NCMD with ``Node Control/Rebirth`` = true has arrived."""
        return any(
            m.name == "Node Control/Rebirth" and m.value is True
            for command in self.commands
            for m in getattr(command.payload, "metrics", ())
        )

    def connect(self) -> None:
        """Connect: pysparkplug publishes NBIRTH and each device's DBIRTH."""
        self.node.connect(self.host, port=self.port, blocking=False)

    @property
    def bd_seq(self) -> int:
        """The bdSeq of the NBIRTH in force (and of the will the broker holds)."""
        value = self.node._bd_seq_metric.value
        assert isinstance(value, int)
        return value

    def data(self, device_id: str, metrics: list[Metric]) -> None:
        """Publish a DDATA with the node's next seq, carrying ``metrics`` as they are."""
        self._publish(
            MessageType.DDATA,
            DData(get_current_timestamp(), seq=self.node._seq, metrics=tuple(metrics)),
            device_id,
            include_dtypes=False,  # as pysparkplug sends data: the DBIRTH declared them
        )

    def skip_seq(self) -> None:
        """Use up one seq without publishing: the message with it is lost."""
        _ = self.node._seq

    def node_death(self, bd_seq: int) -> None:
        """Publish an NDEATH with the given bdSeq."""
        bd = Metric(
            timestamp=get_current_timestamp(), name="bdSeq", datatype=DataType.INT64, value=bd_seq
        )
        self._publish(MessageType.NDEATH, NDeath(get_current_timestamp(), bd_seq_metric=bd))

    def die(self) -> None:
        """End abruptly, as a crash or a pulled cable does: the broker publishes the will."""
        paho = self.node._client._client
        paho.loop_stop()
        sock = paho.socket()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._dead = True

    def close(self) -> None:
        """Disconnect cleanly unless already dead."""
        if not self._dead:
            self.node.disconnect()
            self._dead = True

    def _publish(
        self,
        kind: MessageType,
        payload: Any,
        device_id: str | None = None,
        *,
        include_dtypes: bool = True,
    ) -> None:
        topic = Topic(
            message_type=kind,
            group_id=self.site.park,
            edge_node_id=self.site.factory,
            device_id=device_id,
        )
        self.node._client.publish(
            Message(topic=topic, payload=payload, qos=QoS.AT_MOST_ONCE, retain=False),
            include_dtypes=include_dtypes,
        )


TIMEOUT_S = 30.0


def refusals(conninfo: str, site: EdgeSite) -> list[tuple[str, str, bool]]:
    """(reason, topic, payload kept) of the site's Sparkplug dead letters, oldest first."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT d.reason, d.topic, m.payload IS NOT NULL FROM dead_letters d"
            " JOIN dead_letter_messages m USING (message_id) WHERE d.topic LIKE %s ORDER BY d.id",
            (f"spBv1.0/{site.park}/%",),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def latest(api: TestClient, device_id: str) -> dict[str, Any]:
    """``GET /v1/devices/{id}/latest``."""
    response = api.get(f"/v1/devices/{device_id}/latest")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
