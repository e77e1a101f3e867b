"""Ingest judges and writes the next batch while one is written, yet acknowledges in order.

Each batch is acknowledged only after its own commit and every earlier batch's: with several
writer connections (three by default) a later batch may commit first and still waits; with one,
the next batch is written only after the previous one has committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from services.config import MqttSettings
from tests.harness.ingest import IngestProcess, LoadFleet, Publisher, scrape, stored_rows
from tests.harness.waiting import wait_until


def _message(fleet: LoadFleet, device_id: str, ts: datetime) -> tuple[str, bytes]:
    sample = {"ts": ts.isoformat().replace("+00:00", "Z"), "metrics": {"temp_c": 21.5}}
    return fleet.topic(device_id), orjson.dumps(sample)


def _create_chunk(conninfo: str, device_id: str, ts: datetime) -> None:
    """Make the hypertable chunk for ``ts`` exist (two open inserts would queue on creating it)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO readings (device_id, metric, ts, value, received_at)"
            " VALUES (%s, 'temp_c', %s, 0, now())",
            (device_id, ts),
        )
        conn.commit()
        conn.execute("DELETE FROM readings WHERE device_id = %s", (device_id,))


def _hold_key(conninfo: str, device_id: str, ts: datetime) -> psycopg.Connection:
    """Insert a reading's key in an open transaction: a COPY of that key waits for it."""
    conn = psycopg.connect(conninfo)
    conn.execute(
        "INSERT INTO readings (device_id, metric, ts, value, received_at)"
        " VALUES (%s, 'temp_c', %s, 0, now())",
        (device_id, ts),
    )
    return conn


@dataclass(frozen=True)
class _Counts:
    received: float
    acked: float


def _counts(worker: IngestProcess) -> _Counts:
    figures = scrape(worker.metrics_port)
    return _Counts(
        received=figures.get("parksense_ingest_messages_received_total", 0.0),
        acked=figures.get("parksense_ingest_messages_acked_total", 0.0),
    )


def _ingest_waits_on_a_lock(conninfo: str, client_id: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (f"ingest:{client_id}",),
        ).fetchone()
    return bool(row and row[0])


def _online(conninfo: str, device_id: str) -> bool | None:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT online FROM device_status WHERE device_id = %s", (device_id,)
        ).fetchone()
    return None if row is None else bool(row[0])


@dataclass(frozen=True)
class _HeldBatch:
    """A first batch (a reading of the fleet's first device) whose write waits on its key."""

    ts: datetime
    hold: psycopg.Connection
    publisher: Publisher
    before: _Counts  # the worker's counters while that write waits


@contextmanager
def _first_batch_held(
    conninfo: str, fleet: LoadFleet, worker: IngestProcess, mqtt_settings: MqttSettings
) -> Iterator[_HeldBatch]:
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    _create_chunk(conninfo, fleet.device_ids[-1], ts)
    hold = _hold_key(conninfo, fleet.device_ids[0], ts)
    publisher = Publisher(mqtt_settings)
    try:
        publisher.publish_all([_message(fleet, fleet.device_ids[0], ts)])
        wait_until(
            lambda: _ingest_waits_on_a_lock(conninfo, worker.client_id),
            30,
            message="the first batch's write did not reach the held key",
        )
        before = _counts(worker)
        assert before.acked < before.received  # the first message waits for its commit
        yield _HeldBatch(ts, hold, publisher, before)
    finally:
        hold.close()
        publisher.close()


def _both_stored(fleet: LoadFleet, ts: datetime) -> set[tuple[str, str, datetime, float]]:
    return {(device, "temp_c", ts, 21.5) for device in fleet.device_ids[:2]}


def test_with_one_writer_the_next_batch_is_written_after_the_previous_commit(
    clean_db: str,
    fleet: LoadFleet,
    ingest_factory: Callable[..., IngestProcess],
    mqtt_settings: MqttSettings,
) -> None:
    """A message judged while an earlier batch is written waits for its own batch's commit."""
    worker = ingest_factory(extra_env={"PARKSENSE_INGEST_WRITERS": "1"})
    worker.start()
    first_device, second_device = fleet.device_ids[:2]
    with _first_batch_held(clean_db, fleet, worker, mqtt_settings) as held:
        before = held.before
        second_hold = _hold_key(clean_db, second_device, held.ts)
        try:
            held.publisher.publish_all([_message(fleet, second_device, held.ts)])
            # Taken and judged while the first write is in flight: the loop kept consuming.
            wait_until(
                lambda: _counts(worker).received == before.received + 1,
                30,
                message="ingest did not take the second message while the first was written",
            )
            assert _counts(worker).acked == before.acked

            held.hold.rollback()
            wait_until(
                lambda: _counts(worker).acked == before.received,
                30,
                message="the first batch was not acknowledged after its commit",
            )
            # The second batch is written only now, and waits on its own held key.
            wait_until(
                lambda: _ingest_waits_on_a_lock(clean_db, worker.client_id),
                30,
                message="the second batch's write did not reach its held key",
            )
            assert _counts(worker).acked == before.received
            assert {row[0] for row in stored_rows(clean_db, fleet.prefix)} == {first_device}

            second_hold.rollback()
            wait_until(
                lambda: _counts(worker).acked == before.received + 1,
                30,
                message="the second message was not acknowledged after its commit",
            )
            assert stored_rows(clean_db, fleet.prefix) == _both_stored(fleet, held.ts)
        finally:
            second_hold.close()


def test_a_batch_that_commits_first_is_acknowledged_only_after_the_earlier_batch(
    clean_db: str, fleet: LoadFleet, worker: IngestProcess, mqtt_settings: MqttSettings
) -> None:
    """Two writes in flight: the later batch commits at once, its PUBACK waits for the first."""
    second_device = fleet.device_ids[1]
    with _first_batch_held(clean_db, fleet, worker, mqtt_settings) as held:
        before = held.before
        held.publisher.publish_all([_message(fleet, second_device, held.ts)])
        # Written over another connection while the first write still waits.
        wait_until(
            lambda: (
                stored_rows(clean_db, fleet.prefix) == {(second_device, "temp_c", held.ts, 21.5)}
            ),
            30,
            message="the second batch was not written while the first was in flight",
        )
        assert _counts(worker).acked == before.acked  # committed, yet not acknowledged

        held.hold.rollback()
        wait_until(
            lambda: _counts(worker).acked == before.received + 1,
            30,
            message="the two messages were not acknowledged after the first batch's commit",
        )
        assert stored_rows(clean_db, fleet.prefix) == _both_stored(fleet, held.ts)


def test_a_batch_with_a_status_update_is_written_alone_after_the_writes_in_flight(
    clean_db: str, fleet: LoadFleet, worker: IngestProcess, mqtt_settings: MqttSettings
) -> None:
    """A status update is not written beside an earlier batch, so updates keep their order."""
    second_device = fleet.device_ids[1]
    with _first_batch_held(clean_db, fleet, worker, mqtt_settings) as held:
        before = held.before
        status = orjson.dumps({"online": False, "ts": held.ts.isoformat()})
        held.publisher.publish_all([(fleet.topic(second_device, "status"), status)])
        wait_until(
            lambda: _counts(worker).received == before.received + 1,
            30,
            message="ingest did not take the status message while the first batch was written",
        )
        # Five flush intervals (200 ms): other connections are free all along, yet the
        # status waits (were it written beside the first batch, it would commit at once).
        time.sleep(1.0)
        assert _online(clean_db, second_device) is None

        held.hold.rollback()
        wait_until(
            lambda: _online(clean_db, second_device) is False,
            30,
            message="the status update was not written after the first batch's commit",
        )
        wait_until(
            lambda: _counts(worker).acked == before.received + 1,
            30,
            message="the status message was not acknowledged",
        )
