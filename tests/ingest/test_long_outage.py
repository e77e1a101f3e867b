"""A two-minute PostgreSQL outage under load: nothing lost or doubled, memory flat, no storm."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from services.config import IngestSettings, MqttSettings
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Publisher,
    count_rows,
    dead_letter_reasons,
    make_messages,
    scrape,
    stored_rows,
)
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Four keepalives: Mosquitto drops a client it has not heard from for 1.5 of them.
KEEPALIVE_S = IngestSettings().keepalive_s
OUTAGE_S = 120
assert OUTAGE_S > 3 * KEEPALIVE_S
RATE_MSG_S = 40  # 15 readings a message: 600 readings/s offered throughout
LOAD_S = OUTAGE_S + 40
BUFFER = 200
# Ingest's resident memory may move this much while it holds a full buffer and waits.
RSS_SLACK_KIB = 16 * 1024


class PacedPublisher:
    """Publishes messages at a steady rate from a thread, as devices would during the outage.

    The pacing wait is the load's own clock, not a wait for something to happen.
    """

    def __init__(self, mqtt_settings: MqttSettings, messages: list[tuple[str, bytes]]) -> None:
        """Start publishing ``messages`` at ``RATE_MSG_S``."""
        self.publisher = Publisher(mqtt_settings)
        self.messages = messages
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for i, (topic, payload) in enumerate(self.messages):
            if self.halt.wait(max(0.0, started + i / RATE_MSG_S - time.monotonic())):
                return
            self.infos.append(self.publisher.client.publish(topic, payload, qos=1))

    def finish(self) -> None:
        """Wait until every message is published and acknowledged by the broker."""
        self.thread.join()
        wait_until(
            lambda: all(info.is_published() for info in self.infos),
            60,
            interval_s=0.1,
            message="the broker did not acknowledge every message",
        )
        self.publisher.close()


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def broker_lines(broker: MosquittoBroker, client_id: str, text: str) -> int:
    """How many broker log lines about ``client_id`` contain ``text``."""
    return sum(
        1 for line in broker.log_file.read_text().splitlines() if client_id in line and text in line
    )


def test_two_minute_database_outage_under_load(
    fleet: LoadFleet,
    clean_db: str,
    pg_cluster: PostgresCluster,
    mosquitto: MosquittoBroker,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """PostgreSQL away 2 min under load: all stored once, flat memory, one reconnect."""
    worker = ingest_factory(
        extra_env={
            # More in flight than the buffer holds, so the buffer does fill while down.
            "PARKSENSE_INGEST_RECEIVE_MAXIMUM": str(BUFFER * 2),
            "PARKSENSE_INGEST_MAX_BUFFERED_MESSAGES": str(BUFFER),
        },
    )
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    messages, expected = make_messages(fleet, RATE_MSG_S * LOAD_S * 15)
    load = PacedPublisher(mqtt_settings, messages)
    try:
        wait_until(lambda: count_rows(clean_db, fleet.prefix) > 1_000, 60)
        pg_cluster.stop(mode="immediate")
        try:
            down_at = time.monotonic()
            metrics = lambda: scrape(worker.metrics_port)  # noqa: E731 - read at each check
            wait_until(
                lambda: metrics().get("parksense_ingest_parked") == 1,
                KEEPALIVE_S * 2,
                interval_s=0.5,
                message="ingest never stepped back from the broker with a full buffer",
            )
            parked = metrics()
            assert parked["parksense_ingest_buffer_peak"] == BUFFER
            assert parked["parksense_ingest_connections_total"] == 1
            rss_parked = rss_kib(pid)
            rss_seen: list[int] = []

            def outage_over() -> bool:
                rss_seen.append(rss_kib(pid))
                return time.monotonic() - down_at >= OUTAGE_S

            wait_until(outage_over, OUTAGE_S + 10, interval_s=1.0)
            during = metrics()
        finally:
            pg_cluster.start()
        # Held, not consumed: no acks, no new connection, no reconnect attempts while down.
        assert (
            during["parksense_ingest_messages_acked_total"]
            == (parked["parksense_ingest_messages_acked_total"])
        )
        assert during["parksense_ingest_connections_total"] == 1
        assert during["parksense_ingest_buffer_peak"] <= BUFFER
        assert max(rss_seen) - rss_parked <= RSS_SLACK_KIB, (rss_parked, max(rss_seen))
    finally:
        load.finish()
    wait_until(
        lambda: count_rows(clean_db, fleet.prefix) >= len(expected),
        180,
        interval_s=0.5,
        message=f"stored {count_rows(clean_db, fleet.prefix)} of {len(expected)} readings",
    )
    assert stored_rows(clean_db, fleet.prefix) == expected
    with psycopg.connect(clean_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id LIKE %s", (fleet.prefix + "-%",)
        ).fetchone()
    assert row is not None
    assert row[0] == len(expected)
    assert dead_letter_reasons(clean_db, fleet.prefix) == []
    after = scrape(worker.metrics_port)
    # One clean step back while the database was away, one return once it was back.
    assert after["parksense_ingest_connections_total"] == 2
    assert after["parksense_ingest_parked"] == 0
    assert after["parksense_ingest_buffer_peak"] <= BUFFER
    assert broker_lines(mosquitto, worker.client_id, "exceeded timeout") == 0
    assert broker_lines(mosquitto, worker.client_id, "New client connected") == 2
    assert worker.process.poll() is None
