"""Fixtures for broker access tests: the API that issues credentials, ingest, a fleet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.access.sync import BrokerSync
from services.api.app import create_app
from services.config import ApiSettings, BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.stack.mosquitto import MosquittoBroker
from tests.harness.environment import LOCAL_URL
from tests.harness.ingest import IngestProcess


@pytest.fixture
def broker_sync(broker_auth: BrokerAuthSettings, mosquitto: MosquittoBroker) -> BrokerSync:
    """The sync that puts credential changes in force at the session's broker."""
    return BrokerSync(broker_auth, MqttSettings(host=mosquitto.host, port=mosquitto.port))


@pytest.fixture
def api(
    db_settings: DatabaseSettings, clean_db: str, broker_sync: BrokerSync
) -> Iterator[TestClient]:
    """The API over a freshly emptied test database, issuing credentials to the broker."""
    del clean_db  # Requested for the truncation.
    app = create_app(ApiSettings(), db_settings, broker_sync=broker_sync)
    with TestClient(app, base_url=LOCAL_URL) as client:
        yield client


@pytest.fixture
def ingest(
    db_settings: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path
) -> Iterator[Callable[[], IngestProcess]]:
    """Start an ingest worker (with the ingest credential); stopped afterwards."""
    workers: list[IngestProcess] = []

    def start() -> IngestProcess:
        worker = IngestProcess(db_settings, mqtt_settings, tmp_path)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop_and_forget_session()
