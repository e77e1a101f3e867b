"""Sparkplug B at the real broker: a gateway speaks only as its own factory's edge node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.config import MqttSettings
from services.core.access import PlatformRole
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import platform_mqtt
from tests.harness.mqtt_client import NOT_AUTHORIZED, Client, accepted
from tests.harness.sparkplug import EdgeSite


@pytest.fixture
def gateway(
    site: EdgeSite,
    api: TestClient,
    mosquitto: MosquittoBroker,
) -> Iterator[Client]:
    """An MQTT 5 client with the site factory's gateway credential, connected."""
    response = api.post(f"/v1/factories/{site.factory}/credentials")
    assert response.status_code == 201, response.text
    credential = response.json()
    client = Client(mosquitto.host, mosquitto.port, credential["username"], credential["password"])
    assert client.connect()
    yield client
    client.close()


def test_a_gateway_publishes_as_its_own_edge_node_only(site: EdgeSite, gateway: Client) -> None:
    """Its park and factory, its registered devices; nothing of another node, no commands."""
    ns = f"spBv1.0/{site.park}"
    for topic in (
        f"{ns}/NBIRTH/{site.factory}",
        f"{ns}/NDATA/{site.factory}",
        f"{ns}/NDEATH/{site.factory}",
        f"{ns}/DBIRTH/{site.factory}/{site.meter}",
        f"{ns}/DDATA/{site.factory}/{site.line}",
        f"{ns}/DDEATH/{site.factory}/{site.meter}",
    ):
        assert accepted(gateway.publish(topic, b"")), topic
    for topic in (
        f"spBv1.0/other-park/DDATA/{site.factory}/{site.meter}",  # another park
        f"{ns}/DDATA/other-factory/{site.meter}",  # another factory
        f"{ns}/DDATA/{site.factory}/not-registered",  # a device not in the fleet
        f"{ns}/NCMD/{site.factory}",  # commands are the host's
        f"{ns}/DCMD/{site.factory}/{site.meter}",
        "spBv1.0/STATE/parksense",
        f"{ns}/NBIRTH/{site.factory}/extra",
    ):
        assert gateway.publish(topic, b"") == NOT_AUTHORIZED, topic


def test_a_gateway_subscribes_to_its_own_commands_only(site: EdgeSite, gateway: Client) -> None:
    """NCMD and DCMD addressed to it (what an edge node needs); nothing else of spBv1.0."""
    ns = f"spBv1.0/{site.park}"
    for topic_filter in (f"{ns}/NCMD/{site.factory}", f"{ns}/DCMD/{site.factory}/+"):
        assert accepted(gateway.subscribe(topic_filter)), topic_filter
    for topic_filter in (
        "spBv1.0/#",
        f"{ns}/#",
        f"{ns}/DDATA/{site.factory}/+",
        f"{ns}/NCMD/+",
        f"spBv1.0/other-park/NCMD/{site.factory}",
    ):
        assert gateway.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter


def test_ingest_reads_sparkplug_and_asks_for_rebirths_but_speaks_for_no_node(
    site: EdgeSite, mqtt_settings: MqttSettings, mosquitto: MosquittoBroker
) -> None:
    """Ingest subscribes spBv1.0/# (shared) and publishes NCMD; it cannot publish data."""
    ingest = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    assert ingest.password is not None
    client = Client(
        mosquitto.host, mosquitto.port, ingest.username, ingest.password.get_secret_value()
    )
    try:
        assert client.connect()
        assert accepted(client.subscribe(f"$share/g{site.prefix}/spBv1.0/#"))
        assert accepted(client.publish(f"spBv1.0/{site.park}/NCMD/{site.factory}", b""))
        topic = f"spBv1.0/{site.park}/DDATA/{site.factory}/{site.meter}"
        assert client.publish(topic, b"") == NOT_AUTHORIZED
    finally:
        client.close()
