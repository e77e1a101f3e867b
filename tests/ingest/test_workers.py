"""Workers split the factories on plain persistent subscriptions; a broker restart loses nothing.

Mosquitto 2.0 does not save ``$share`` subscriptions, so with shared workers whatever is
published between a broker restart and their resubscription is dropped. Plain
subscriptions live in the persistent sessions, which the broker saves and restores, so
it queues those messages for the workers until they reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.config import MqttSettings
from services.core.assignment import WorkerSlot, owned_factories
from services.stack.mosquitto import MosquittoBroker
from tests.harness.ingest import (
    SUBSCRIBED_LINE,
    Background,
    IngestProcess,
    ParksFleet,
    acked_all,
    assert_exactly_stored,
    count_rows,
    make_messages,
    publish_concurrently,
    scrape,
    unique_prefix,
)
from tests.harness.waiting import wait_until

pytestmark = pytest.mark.slow

WORKERS = 2
READINGS = 50_000
# Published right after the broker is back, before the workers have reconnected (their
# first retry waits a second): with shared subscriptions, these are the messages lost.
BURST_READINGS = 15_000
PUBLISHERS = 4
SLOW_REGISTRY_POLL = {"PARKSENSE_INGEST_REGISTRY_REFRESH_S": "3"}


@pytest.fixture
def parks_fleet(clean_db: str) -> ParksFleet:
    """A loaded fleet of 20 env sensors over 4 parks, 2 owned by each of 2 workers."""
    fleet = ParksFleet(unique_prefix(), workers=WORKERS)
    fleet.load(clean_db)
    return fleet


def start_workers(
    factory: Callable[..., IngestProcess], count: int = WORKERS
) -> list[IngestProcess]:
    workers = [factory(slot=(index, count)) for index in range(1, count + 1)]
    for worker in workers:
        worker.start()
    return workers


def test_each_worker_receives_the_messages_of_its_own_factories_only(
    parks_fleet: ParksFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Worker i of 2 holds its factories' 4 filters and receives exactly their messages."""
    workers = start_workers(ingest_factory)
    messages, expected = make_messages(parks_fleet, 6_000)
    publish_concurrently(mqtt_settings, messages, PUBLISHERS)
    assert_exactly_stored(clean_db, parks_fleet, expected)
    for index, worker in enumerate(workers, start=1):
        mine = owned_factories(
            WorkerSlot(index, WORKERS),
            [(p, parks_fleet.factory_of(p)) for p in parks_fleet.park_ids],
        )
        own = sum(1 for topic, _ in messages if tuple(topic.split("/")[2:4]) in mine)
        assert 0 < own < len(messages)
        wait_until(partial(acked_all, worker), 30)
        assert scrape(worker.metrics_port)["parksense_ingest_messages_received_total"] == own
        log = worker.log_path.read_text()
        assert f"{SUBSCRIBED_LINE} {index} of {WORKERS} (parks assignment): 4 filters" in log


def test_two_workers_lose_nothing_when_the_broker_restarts_mid_stream(
    parks_fleet: ParksFleet,
    clean_db: str,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Two workers, broker restarted mid-stream: every reading stored once, none lost.

    The publishers keep publishing at QoS 1 across the restart (reconnecting and resending
    what was not acknowledged), and a burst goes out the moment the broker is back, before
    the workers have reconnected.
    """
    start_workers(ingest_factory)
    messages, expected = make_messages(parks_fleet, READINGS)
    publishing = Background(lambda: publish_concurrently(mqtt_settings, messages, PUBLISHERS))
    wait_until(lambda: count_rows(clean_db, parks_fleet.prefix) > READINGS // 10, 60)
    mosquitto.restart()
    burst, burst_expected = make_messages(
        parks_fleet, BURST_READINGS, start=datetime.now(UTC) - timedelta(minutes=30)
    )
    publish_concurrently(mqtt_settings, burst, PUBLISHERS)
    publishing.join()
    assert_exactly_stored(clean_db, parks_fleet, expected | burst_expected)


def test_a_new_park_is_subscribed_by_its_owner_before_the_load_returns(
    parks_fleet: ParksFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """A fleet load adding parks returns once their owners subscribed: nothing after it is lost.

    The workers poll the registry only every 3 s here, so without the wait the first
    seconds of the new parks' messages would find no subscription.
    """
    workers = [
        ingest_factory(slot=(index, WORKERS), extra_env=SLOW_REGISTRY_POLL)
        for index in range(1, WORKERS + 1)
    ]
    for worker in workers:
        worker.start()
    grown = ParksFleet(parks_fleet.prefix, devices=30, workers=WORKERS, parks_per_worker=3)
    grown.load(clean_db)
    messages, expected = make_messages(grown, 3_000)
    publish_concurrently(mqtt_settings, messages, PUBLISHERS)
    assert_exactly_stored(clean_db, grown, expected)
    taken = "Factories changed: 2 filters added, 0 removed (6 held)"
    assert all(taken in worker.log_path.read_text() for worker in workers)
