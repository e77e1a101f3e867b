"""Dead letters are bounded: a message costs about its own size, however much of it is refused."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime

import orjson
import psycopg

from services.config import MqttSettings
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    dead_letter_messages,
    publish_concurrently,
)
from tests.harness.waiting import wait_until

# Enough messages that whole 8 KiB pages (each table and index gets its first one) are
# spread over them, so the figure is what a message costs, not what a first page costs.
MESSAGES = 10
METRICS_PER_MESSAGE = 2000


def dead_letter_bytes(conninfo: str) -> int:
    """Bytes of both dead-letter tables, with their TOAST tables and indexes."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('dead_letters')"
            " + pg_total_relation_size('dead_letter_messages')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_sample_of_2000_unknown_metrics_costs_at_most_twice_its_size(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """2,000 refused readings of one ~20 KB sample: one payload, one row, at most 2x its size."""
    rng = random.Random(8)  # random names: a payload that compresses little, as in the issue
    now = datetime.now(UTC).isoformat()
    messages = []
    for i in range(MESSAGES):
        names = {"".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(3000)}
        metrics = dict.fromkeys(sorted(names)[:METRICS_PER_MESSAGE], 1)
        payload = orjson.dumps({"ts": now, "metrics": metrics})
        messages.append((fleet.topic(fleet.device_ids[i]), payload))
    message_bytes = sum(len(topic) + len(payload) for topic, payload in messages) / MESSAGES
    before = dead_letter_bytes(clean_db)
    publish_concurrently(mqtt_settings, messages, publishers=1)
    wait_until(lambda: len(dead_letter_messages(clean_db, fleet.prefix)) == MESSAGES, 30)
    per_message = (dead_letter_bytes(clean_db) - before) / MESSAGES
    assert 19_000 < message_bytes < 21_000
    assert per_message <= 2 * message_bytes, (per_message, message_bytes)
    with psycopg.connect(clean_db) as conn:
        groups = conn.execute("SELECT reason, refused FROM dead_letters").fetchall()
    assert groups == [("unknown_metric", METRICS_PER_MESSAGE)] * MESSAGES
