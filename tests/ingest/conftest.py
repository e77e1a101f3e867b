"""Fixtures for ingest tests: a fresh fleet and real ingest workers per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.config import DatabaseSettings, MqttSettings
from tests.harness.ingest import IngestProcess, LoadFleet, unique_prefix


@pytest.fixture
def fleet(clean_db: str) -> LoadFleet:
    """A loaded one-park fleet of 20 env sensors with ids unique to the test."""
    test_fleet = LoadFleet(unique_prefix())
    test_fleet.load(clean_db)
    return test_fleet


@pytest.fixture
def ingest_factory(
    db_settings: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path
) -> Iterator[Callable[..., IngestProcess]]:
    """Start ingest workers; each is stopped and its broker session removed afterwards."""
    workers: list[IngestProcess] = []

    def make(**kwargs: object) -> IngestProcess:
        worker = IngestProcess(db_settings, mqtt_settings, tmp_path, **kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop_and_forget_session()


@pytest.fixture
def worker(fleet: LoadFleet, ingest_factory: Callable[..., IngestProcess]) -> IngestProcess:
    """One running ingest worker over the test's fleet (running means its registry is loaded)."""
    started = ingest_factory()
    started.start()
    return started
