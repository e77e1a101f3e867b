"""Identity and access at the real broker: only issued credentials, only their own topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from services.config import MqttSettings
from services.core.access import PlatformRole
from services.core.assignment import Assignment, WorkerSlot, subscription_plan
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import mqtt_client_id, platform_mqtt
from tests.harness.ingest import IngestProcess, LoadFleet, Publisher, count_rows, make_messages
from tests.harness.mqtt_client import NOT_AUTHORIZED, Client, accepted
from tests.harness.waiting import wait_until

STORE_TIMEOUT_S = 30.0


class Site:
    """Two parks; the first has factories ``a`` and ``b``, each with two env sensors."""

    def __init__(self) -> None:
        """Pick ids unique to the test."""
        self.tag = "t" + uuid.uuid4().hex[:8]
        self.park = f"{self.tag}-park"
        self.other_park = f"{self.tag}-park2"
        self.extra_devices: list[str] = []

    def factory(self, name: str) -> str:
        """A factory id."""
        return f"{self.tag}-{name}"

    def device(self, factory: str, n: int) -> str:
        """A device id."""
        return f"{self.tag}-{factory}{n}"

    def fleet_yaml(self) -> str:
        """The fleet file (with any devices added to factory ``a``)."""

        def devices(factory: str, extra: list[str]) -> str:
            ids = [self.device(factory, n) for n in (1, 2)] + extra
            return "\n".join(f"          - {{id: {d}, type: env_sensor}}" for d in ids)

        return (
            f"parks:\n  - id: {self.park}\n    factories:\n"
            f"      - id: {self.factory('a')}\n        devices:\n"
            f"{devices('a', self.extra_devices)}\n"
            f"      - id: {self.factory('b')}\n        devices:\n{devices('b', [])}\n"
            f"  - id: {self.other_park}\n    factories:\n"
            f"      - id: {self.factory('c')}\n        devices:\n{devices('c', [])}\n"
        )

    def topic(self, factory: str, device: str, channel: str = "telemetry") -> str:
        """A device's topic."""
        park = self.other_park if factory == "c" else self.park
        return f"parksense/v1/{park}/{self.factory(factory)}/{device}/{channel}"


@pytest.fixture
def site(api: TestClient) -> Site:
    """The two-park fleet, loaded through the API."""
    loaded = Site()
    response = api.put(
        "/v1/fleet", content=loaded.fleet_yaml(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 200, response.text
    return loaded


@pytest.fixture
def clients(mosquitto: MosquittoBroker) -> Iterator[Callable[..., Client]]:
    """Make test clients of the session broker; all are closed afterwards."""
    made: list[Client] = []

    def make(username: str | None, password: str | None, client_id: str | None = None) -> Client:
        client = Client(mosquitto.host, mosquitto.port, username, password, client_id)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def issue(api: TestClient, path: str) -> dict[str, Any]:
    """POST a credential path and return the issued credential."""
    response = api.post(path)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def sample(offset_s: float = 0) -> bytes:
    """One valid env-sensor sample."""
    ts = datetime.now(UTC) - timedelta(seconds=60 - offset_s)
    return orjson.dumps({"ts": ts.isoformat(), "metrics": {"temp_c": 21.5}})


def test_anonymous_and_wrong_password_connections_are_refused(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """No credential, an unknown user or a wrong password: the broker refuses the CONNECT."""
    device = site.device("a", 1)
    credential = issue(api, f"/v1/devices/{device}/credentials")
    assert not clients(None, None, f"anon-{site.tag}").connect()
    assert not clients("device.nobody", "x", f"device.nobody.{site.tag}").connect()
    assert not clients(credential["username"], "wrong").connect()
    right = clients(credential["username"], credential["password"])
    assert right.connect()


def test_issued_device_credential_has_the_contract_fields(site: Site, api: TestClient) -> None:
    """201 with username, a password, the client-id prefix and the device's two topics."""
    device = site.device("a", 1)
    credential = issue(api, f"/v1/devices/{device}/credentials")
    assert credential["username"] == f"device.{device}"
    assert credential["client_id_prefix"] == f"device.{device}."
    assert len(credential["password"]) >= 32
    assert sorted(credential["topics"]) == [
        site.topic("a", device, "status"),
        site.topic("a", device),
    ]


def test_device_publishes_only_on_its_own_topics(
    site: Site,
    api: TestClient,
    clients: Callable[..., Client],
    ingest: Callable[[], IngestProcess],
    clean_db: str,
) -> None:
    """Its own telemetry is stored; another device's telemetry or status is refused unseen."""
    ingest()
    mine, other = site.device("a", 1), site.device("a", 2)
    credential = issue(api, f"/v1/devices/{mine}/credentials")
    client = clients(credential["username"], credential["password"])
    assert client.connect()
    assert client.publish(site.topic("a", other), sample()) == NOT_AUTHORIZED
    offline = orjson.dumps(
        {"online": False, "ts": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    )
    assert client.publish(site.topic("a", other, "status"), offline, retain=True) == NOT_AUTHORIZED
    assert client.publish(site.topic("c", site.device("c", 1)), sample()) == NOT_AUTHORIZED
    assert accepted(client.publish(site.topic("a", mine), sample()))
    assert not client.disconnected.is_set(), "a refused publish must not cost the connection"
    wait_until(lambda: stored(clean_db, mine) == 1, STORE_TIMEOUT_S)
    with psycopg.connect(clean_db) as conn:
        others = conn.execute(
            "SELECT (SELECT count(*) FROM readings WHERE device_id <> %s AND device_id LIKE %s),"
            " (SELECT count(*) FROM device_status WHERE device_id = %s AND online IS NOT NULL),"
            " (SELECT count(*) FROM dead_letters)",
            (mine, f"{site.tag}-%", other),
        ).fetchone()
    assert others == (0, 0, 0)


def test_subscriptions_outside_the_grants_are_refused(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """Devices and gateways read nothing of the platform; a reader reads its park's signals only."""
    device = issue(api, f"/v1/devices/{site.device('a', 1)}/credentials")
    gateway = issue(api, f"/v1/factories/{site.factory('a')}/credentials")
    reader = issue(api, f"/v1/parks/{site.park}/reader-credentials")
    for credential in (device, gateway, reader):
        client = clients(credential["username"], credential["password"])
        assert client.connect()
        for topic_filter in ("#", "parksense/v1/#", f"parksense/v1/{site.park}/+/+/+/telemetry"):
            assert client.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter
        assert client.subscribe(f"parksense/v1/{site.other_park}/signals") == NOT_AUTHORIZED
    reading = clients(reader["username"], reader["password"])
    assert reading.connect()
    assert accepted(reading.subscribe(f"parksense/v1/{site.park}/signals"))
    assert reader["topics"] == [f"parksense/v1/{site.park}/signals"]
    assert reading.publish(f"parksense/v1/{site.park}/signals", b"{}") == NOT_AUTHORIZED


def test_a_credential_cannot_take_a_client_id_outside_its_prefix(
    site: Site,
    api: TestClient,
    clients: Callable[..., Client],
    ingest: Callable[[], IngestProcess],
    mqtt_settings: MqttSettings,
    clean_db: str,
) -> None:
    """Ingest's client id is refused to a device, and ingest stores every reading meanwhile."""
    worker = ingest()
    credential = issue(api, f"/v1/factories/{site.factory('a')}/credentials")
    fleet = LoadFleet(site.tag)
    fleet.park, fleet.factory = site.park, site.factory("a")
    fleet.devices = 2
    messages, expected = make_messages(fleet, readings=300, samples_per_message=5)
    messages = [
        (site.topic("a", site.device("a", 1 + i % 2)), payload)
        for i, (_, payload) in enumerate(messages)
    ]
    publisher = Publisher(mqtt_settings)
    try:
        infos = publisher.publish_all(messages[: len(messages) // 2])
        for stolen in (worker.client_id, mqtt_client_id(mqtt_settings, "x"), "parksense.ingest"):
            assert not clients(credential["username"], credential["password"], stolen).connect()
        infos += publisher.publish_all(messages[len(messages) // 2 :])
        wait_until(lambda: all(i.is_published() for i in infos), STORE_TIMEOUT_S)
    finally:
        publisher.close()
    assert clients(
        credential["username"], credential["password"], credential["client_id_prefix"] + "gw"
    ).connect()
    wait_until(lambda: count_rows(clean_db, site.tag) >= len(expected), STORE_TIMEOUT_S)
    assert count_rows(clean_db, site.tag) == len(expected)
    assert worker.process is not None
    assert worker.process.poll() is None


def test_rotation_and_revocation_drop_the_old_connection(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """Issuing again disconnects the old password's client; revoking disconnects the new one."""
    path = f"/v1/devices/{site.device('a', 1)}/credentials"
    first = issue(api, path)
    old = clients(first["username"], first["password"])
    assert old.connect()
    second = issue(api, path)
    assert second["password"] != first["password"]
    wait_until(old.disconnected.is_set, 5, message="the rotated client stayed connected")
    assert not clients(first["username"], first["password"]).connect()
    current = clients(second["username"], second["password"])
    assert current.connect()
    assert api.delete(path).status_code == 204
    wait_until(current.disconnected.is_set, 5, message="the revoked client stayed connected")
    assert not clients(second["username"], second["password"]).connect()
    assert api.delete(path).status_code == 404


def test_gateway_publishes_for_its_factory_including_a_device_just_registered(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """A device added by a fleet load may be published for by its gateway once the load returns."""
    credential = issue(api, f"/v1/factories/{site.factory('a')}/credentials")
    gateway = clients(credential["username"], credential["password"])
    assert gateway.connect()
    for n in (1, 2):
        assert accepted(gateway.publish(site.topic("a", site.device("a", n)), sample()))
    assert gateway.publish(site.topic("b", site.device("b", 1)), sample()) == NOT_AUTHORIZED
    newcomer = site.device("a", 3)
    assert gateway.publish(site.topic("a", newcomer), sample()) == NOT_AUTHORIZED
    site.extra_devices.append(newcomer)
    response = api.put(
        "/v1/fleet", content=site.fleet_yaml(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 200, response.text
    assert accepted(gateway.publish(site.topic("a", newcomer), sample()))
    assert (
        site.topic("a", newcomer)
        in issue(api, f"/v1/factories/{site.factory('a')}/credentials")["topics"]
    )


def test_credentials_for_unregistered_ids_are_404(api: TestClient, site: Site) -> None:
    """A device, factory or park that is not registered gets no credential."""
    for path in (
        "/v1/devices/nobody-here/credentials",
        "/v1/factories/nobody-here/credentials",
        "/v1/parks/nobody-here/reader-credentials",
    ):
        response = api.post(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")


def test_a_device_removed_from_the_fleet_can_no_longer_connect(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """A credential works while its device is registered; a fleet load without it ends it."""
    device = site.device("b", 2)
    credential = issue(api, f"/v1/devices/{device}/credentials")
    client = clients(credential["username"], credential["password"])
    assert client.connect()
    fleet = site.fleet_yaml().replace(f"          - {{id: {device}, type: env_sensor}}\n", "")
    assert api.put("/v1/fleet", content=fleet).status_code == 200
    wait_until(client.disconnected.is_set, 5, message="the removed device stayed connected")
    assert not clients(credential["username"], credential["password"]).connect()


def test_platform_credentials_keep_to_their_roles(
    mqtt_settings: MqttSettings, clients: Callable[..., Client]
) -> None:
    """The simulator cannot read device data; ingest cannot publish telemetry."""
    simulator = clients(mqtt_settings.username, _secret(mqtt_settings))
    assert simulator.connect()
    assert simulator.subscribe("parksense/v1/#") == NOT_AUTHORIZED
    ingest = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    reader = clients(ingest.username, _secret(ingest))
    assert reader.connect()
    assert reader.publish("parksense/v1/p/f/d/telemetry", sample()) == NOT_AUTHORIZED


def stored(conninfo: str, device_id: str) -> int:
    """How many readings of ``device_id`` are stored."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id = %s", (device_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def _secret(settings: MqttSettings) -> str:
    assert settings.password is not None
    return settings.password.get_secret_value()


def test_ingest_may_subscribe_to_every_assignment_filter_and_nothing_else(
    mqtt_settings: MqttSettings, clients: Callable[..., Client]
) -> None:
    """Every filter an assignment gives a worker is granted to ingest; others are refused."""
    ingest = platform_mqtt(mqtt_settings, PlatformRole.INGEST)
    worker = clients(ingest.username, _secret(ingest))
    assert worker.connect()
    factories = [("hebi-tech", "f01"), ("hebi-tech", "f02"), ("p2", "f03"), ("p3", "f04")]
    plans = [
        subscription_plan(Assignment.PARKS, WorkerSlot(1, 1), factories),
        subscription_plan(Assignment.PARKS, WorkerSlot(1, 2), factories),
        subscription_plan(Assignment.PARKS, WorkerSlot(2, 2), factories),
        subscription_plan(Assignment.SHARE, WorkerSlot(1, 2), factories, share_group="ingest"),
    ]
    for topic_filter in sorted({f for plan in plans for f in plan.filters}):
        assert accepted(worker.subscribe(topic_filter)), topic_filter
    for topic_filter in ("#", "$SYS/#", "+/v1/#", "parksense/#", "parksense/v2/#", "spAv1.0/#"):
        assert worker.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter


def test_no_device_or_gateway_credential_publishes_under_an_unregistered_park(
    site: Site, api: TestClient, clients: Callable[..., Client]
) -> None:
    """What no worker subscribes to with several workers, no device or gateway can send."""
    device = site.device("a", 1)
    factory = site.factory("a")
    unregistered = f"{site.tag}-nowhere"
    for path in (f"/v1/devices/{device}/credentials", f"/v1/factories/{factory}/credentials"):
        credential = issue(api, path)
        client = clients(credential["username"], credential["password"])
        assert client.connect()
        for topic in (
            f"parksense/v1/{unregistered}/{factory}/{device}/telemetry",
            f"parksense/v1/{site.park}/{factory}-x/{device}/telemetry",
            f"parksense/v1/{site.park}/x",
            f"spBv1.0/{unregistered}/NDATA/{factory}",
        ):
            assert client.publish(topic, sample()) == NOT_AUTHORIZED, (path, topic)
