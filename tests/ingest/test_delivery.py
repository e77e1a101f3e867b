"""Nothing lost, nothing doubled: exact accounting under crashes, restarts and redelivery.

Each case publishes at least 50,000 readings at QoS 1 from several publishers while
something breaks, then compares the exact set of (device, metric, ts, value) stored with
the set published.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.config import MqttSettings
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from tests.harness.ingest import (
    Background,
    IngestProcess,
    LoadFleet,
    Row,
    assert_exactly_stored,
    count_rows,
    make_messages,
    publish_concurrently,
    scrape,
)
from tests.harness.waiting import wait_until

pytestmark = pytest.mark.slow

READINGS = 50_000
PUBLISHERS = 4


def started(factory: Callable[..., IngestProcess], conninfo: str, **kw: object) -> IngestProcess:
    worker = factory(**kw)
    worker.start()
    return worker


def publish_mid_stream(
    fleet: LoadFleet, conninfo: str, mqtt_settings: MqttSettings
) -> tuple[Background, set[Row]]:
    """Start publishing READINGS readings and return once a tenth of them is stored."""
    messages, expected = make_messages(fleet, READINGS)
    publishing = Background(lambda: publish_concurrently(mqtt_settings, messages, PUBLISHERS))
    wait_until(lambda: count_rows(conninfo, fleet.prefix) > READINGS // 10, 60)
    return publishing, expected


def test_sigkill_mid_stream_loses_nothing(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(a) Ingest killed with SIGKILL and restarted: every reading stored exactly once."""
    worker = started(ingest_factory, clean_db)
    publishing, expected = publish_mid_stream(fleet, clean_db, mqtt_settings)
    worker.kill()
    worker.start()
    publishing.join()
    assert_exactly_stored(clean_db, fleet, expected)


def test_postgres_restart_mid_stream_loses_nothing(
    fleet: LoadFleet,
    clean_db: str,
    pg_cluster: PostgresCluster,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(b) PostgreSQL restarted mid-stream: ingest holds, retries and resumes by itself."""
    worker = started(ingest_factory, clean_db)
    publishing, expected = publish_mid_stream(fleet, clean_db, mqtt_settings)
    pg_cluster.restart(mode="immediate")
    publishing.join()
    assert_exactly_stored(clean_db, fleet, expected)
    assert worker.process is not None
    assert worker.process.poll() is None
    assert "Database unavailable" in worker.log_path.read_text()


def test_mosquitto_restart_mid_stream_loses_nothing(
    fleet: LoadFleet,
    clean_db: str,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(c) Broker restarted mid-stream: publishers and ingest reconnect, queues survive."""
    started(ingest_factory, clean_db)
    publishing, expected = publish_mid_stream(fleet, clean_db, mqtt_settings)
    mosquitto.restart()
    publishing.join()
    assert_exactly_stored(clean_db, fleet, expected)


def test_every_message_published_twice_is_stored_once(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(d) Every message arrives twice: duplicates are counted, not stored."""
    worker = started(ingest_factory, clean_db)
    messages, expected = make_messages(fleet, READINGS)
    publish_concurrently(mqtt_settings, messages, PUBLISHERS, copies=2)
    assert_exactly_stored(clean_db, fleet, expected)

    def duplicates_counted() -> bool:
        counted = scrape(worker.metrics_port)["parksense_ingest_readings_duplicate_total"]
        return counted >= len(expected)

    wait_until(duplicates_counted, 30, message="duplicates were not counted")


def test_two_workers_one_killed_loses_nothing(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(e) Two workers share the subscription; one is killed and returns: nothing is lost.

    Mosquitto keeps the unacknowledged messages of a persistent session (and the shared
    messages routed to it while away) for that session, so they arrive when it returns.
    """
    group = f"g-{fleet.prefix}"
    first = started(ingest_factory, clean_db, share_group=group)
    second = started(ingest_factory, clean_db, share_group=group)
    publishing, expected = publish_mid_stream(fleet, clean_db, mqtt_settings)
    second.kill()
    publishing.join()
    second.start()
    assert_exactly_stored(clean_db, fleet, expected)
    assert first.process is not None
    assert first.process.poll() is None


def test_store_and_forward_flush_fills_history_without_moving_latest_back(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """(f) A flush of old, out-of-order samples lands in history; latest never goes back."""
    started(ingest_factory, clean_db)
    now = datetime.now(UTC)
    live, live_expected = make_messages(fleet, 3_000, start=now - timedelta(minutes=1))
    publish_concurrently(mqtt_settings, live, PUBLISHERS)
    assert_exactly_stored(clean_db, fleet, live_expected)
    with psycopg.connect(clean_db) as conn:
        latest_before: dict[str, datetime] = dict(
            conn.execute(
                "SELECT device_id || '/' || metric, ts FROM device_latest WHERE device_id LIKE %s",
                (fleet.prefix + "-%",),
            ).fetchall()
        )
    old, old_expected = make_messages(
        fleet, READINGS, samples_per_message=200, start=now - timedelta(days=2),
        step=timedelta(seconds=1),
    )  # fmt: skip
    old.reverse()  # newest first: out of order, as a gateway draining a ring buffer might
    publish_concurrently(mqtt_settings, old, PUBLISHERS)
    assert_exactly_stored(clean_db, fleet, live_expected | old_expected)
    with psycopg.connect(clean_db) as conn:
        latest_after: dict[str, datetime] = dict(
            conn.execute(
                "SELECT device_id || '/' || metric, ts FROM device_latest WHERE device_id LIKE %s",
                (fleet.prefix + "-%",),
            ).fetchall()
        )
        seen = conn.execute(
            "SELECT min(last_seen_ts) FROM device_status WHERE device_id LIKE %s",
            (fleet.prefix + "-%",),
        ).fetchone()
    assert latest_after == latest_before
    assert seen is not None
    assert seen[0] >= now - timedelta(minutes=1)


def test_sigterm_drains_and_exits_cleanly(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """SIGTERM mid-stream: flush, commit, acknowledge, disconnect, exit 0; nothing lost."""
    worker = started(ingest_factory, clean_db)
    publishing, expected = publish_mid_stream(fleet, clean_db, mqtt_settings)
    assert worker.terminate() == 0
    assert "stopped" in worker.log_path.read_text()
    worker.start()
    publishing.join()
    assert_exactly_stored(clean_db, fleet, expected)


def test_database_outage_holds_at_most_receive_maximum_messages(
    fleet: LoadFleet,
    clean_db: str,
    pg_cluster: PostgresCluster,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """While the database is down nothing is acked and memory stays bounded; all lands later."""
    worker = started(
        ingest_factory,
        clean_db,
        extra_env={
            "PARKSENSE_INGEST_RECEIVE_MAXIMUM": "50",
            "PARKSENSE_INGEST_MAX_BUFFERED_MESSAGES": "200",
        },
    )
    messages, expected = make_messages(fleet, 15_000)
    pg_cluster.stop(mode="immediate")
    try:
        publish_concurrently(mqtt_settings, messages, PUBLISHERS)
        wait_until(
            lambda: scrape(worker.metrics_port).get("parksense_ingest_db_retries_total", 0) >= 3,
            60,
            message="ingest never retried",
        )
        held = scrape(worker.metrics_port)
        assert held["parksense_ingest_messages_received_total"] <= 50
        assert held["parksense_ingest_messages_acked_total"] == 0
        assert held["parksense_ingest_degraded"] == 1
    finally:
        pg_cluster.start()
    assert_exactly_stored(clean_db, fleet, expected)
    wait_until(lambda: scrape(worker.metrics_port)["parksense_ingest_degraded"] == 0, 30)
    # Once acknowledgements flow again Mosquitto 2.0 sends its whole queue at once; the
    # consumer still never holds more than its buffer.
    assert scrape(worker.metrics_port)["parksense_ingest_buffer_peak"] <= 200
