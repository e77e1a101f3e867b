"""Fixtures for the Sparkplug B host: a fleet, gateway credentials, pysparkplug edge nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.config import DatabaseSettings, MqttSettings
from services.stack.mosquitto import MosquittoBroker
from tests.access.conftest import api, broker_sync  # noqa: F401 - fixtures used here too
from tests.harness.ingest import IngestProcess, unique_prefix
from tests.harness.sparkplug import EdgeSite, Gateway


@pytest.fixture
def site(api: TestClient) -> EdgeSite:  # noqa: F811 - the imported fixture
    """A park with one factory (a power meter, a production line), loaded through the API."""
    loaded = EdgeSite(unique_prefix())
    response = api.put(
        "/v1/fleet", content=loaded.fleet_yaml(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 200, response.text
    return loaded


@pytest.fixture
def gateways(
    site: EdgeSite,
    api: TestClient,  # noqa: F811 - the imported fixture
    mosquitto: MosquittoBroker,
) -> Iterator[Callable[[], Gateway]]:
    """Make pysparkplug edge nodes for the site's factory with its gateway credential."""
    response = api.post(f"/v1/factories/{site.factory}/credentials")
    assert response.status_code == 201, response.text
    credential = response.json()
    made: list[Gateway] = []

    def make() -> Gateway:
        gateway = Gateway(site, mosquitto.host, mosquitto.port, credential)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def workers(
    db_settings: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path, site: EdgeSite
) -> Iterator[Callable[[int], list[IngestProcess]]]:
    """Start N ingest workers sharing one subscription; each is stopped afterwards."""
    started: list[IngestProcess] = []

    def start(count: int) -> list[IngestProcess]:
        batch = [
            IngestProcess(db_settings, mqtt_settings, tmp_path, share_group=f"g{site.prefix}")
            for _ in range(count)
        ]
        for worker in batch:
            started.append(worker)
            worker.start()
        return batch

    yield start
    for worker in started:
        worker.stop_and_forget_session()
