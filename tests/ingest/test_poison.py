"""Poison messages: nothing a device publishes can stop ingest or make a message loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
import psycopg

from services.config import MqttSettings
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Publisher,
    acked_all,
    count_rows,
    dead_letter_messages,
    dead_letter_reasons,
    scrape,
)
from tests.harness.waiting import wait_until


def _publish(mqtt_settings: MqttSettings, messages: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(mqtt_settings)
    infos = publisher.publish_all(messages)
    wait_until(lambda: all(i.is_published() for i in infos), 10)
    publisher.close()


@contextmanager
def refusing(conninfo: str, table: str, condition: str) -> Iterator[None]:
    """While inside, the database refuses rows of ``table`` matching ``condition`` (22000)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION test_refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF {condition} THEN"
            " RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22000';"
            " END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER test_refuse_row BEFORE INSERT ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse_row()"
        )
    try:
        yield
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER test_refuse_row ON {table}")
            conn.execute("DROP FUNCTION test_refuse_row()")


def test_text_postgres_cannot_store_is_dead_lettered_and_ingest_keeps_running(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """NUL, a lone surrogate and invalid UTF-8 become dead letters; a good reading after lands."""
    now = datetime.now(UTC).isoformat()
    topic = fleet.topic(fleet.device_ids[0])
    poison = [
        (topic, f'{{"ts": "{now}", "metrics": {{"x\\u0000": 1}}}}'.encode()),
        (topic, f'{{"ts": "{now}", "metrics": {{"\\ud800": 1}}}}'.encode()),
        (topic, f'{{"ts": "{now}", "metrics": {{"temp_c": "\\u0000"}}}}'.encode()),
        (topic, b'{"ts": "' + now.encode() + b'", "metrics": {"\xff": 1}}'),
    ]
    _publish(mqtt_settings, [*poison, (topic, orjson.dumps({"ts": now, "metrics": {"temp_c": 2}}))])
    wait_until(lambda: count_rows(clean_db, fleet.prefix) >= 1, 15)
    wait_until(lambda: len(dead_letter_messages(clean_db, fleet.prefix)) >= len(poison), 15)
    assert worker.process is not None
    assert worker.process.poll() is None
    assert dead_letter_messages(clean_db, fleet.prefix) == poison
    assert dead_letter_reasons(clean_db, fleet.prefix) == [
        "unstorable_text",
        "unstorable_text",
        "unstorable_text",
        "invalid_utf8",
    ]


def test_dead_letter_the_database_refuses_is_stored_in_minimal_form(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """A dead letter refused by the database is kept as reason, topic and payload instead."""
    now = datetime.now(UTC).isoformat()
    topic = fleet.topic(fleet.device_ids[0])
    refused = orjson.dumps({"ts": now, "metrics": {"volts": 1, "temp_c": 20}})
    # Only the full form lists metrics, so the minimal form gets through.
    with refusing(clean_db, "dead_letters", "NEW.metrics <> '{}'"):
        _publish(mqtt_settings, [(topic, refused)])
        wait_until(lambda: dead_letter_messages(clean_db, fleet.prefix), 15)
    assert dead_letter_messages(clean_db, fleet.prefix) == [(topic, refused)]
    with psycopg.connect(clean_db) as conn:
        row = conn.execute("SELECT reason, refused, detail, metric FROM dead_letters").fetchone()
    assert row is not None
    assert row[:2] == ("unknown_metric", 1)
    assert row[2].startswith("the full dead letter was refused (22000)")
    assert row[3] is None
    assert count_rows(clean_db, fleet.prefix) == 1  # the sample's good reading
    assert scrape(worker.metrics_port)["parksense_ingest_dead_letters_minimal_total"] == 1
    assert worker.process is not None
    assert worker.process.poll() is None


def test_message_no_dead_letter_can_record_is_counted_logged_and_acknowledged(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """When even the minimal dead letter is refused, the message is counted, logged and acked."""
    now = datetime.now(UTC).isoformat()
    topic = fleet.topic(fleet.device_ids[0])
    marker = "secret-payload-marker"
    poison = orjson.dumps({"ts": now, "metrics": {marker: 1}})
    good = orjson.dumps({"ts": now, "metrics": {"temp_c": 20}})
    condition = f"position('{marker}'::bytea in NEW.payload) > 0"
    with refusing(clean_db, "dead_letter_messages", condition):
        _publish(mqtt_settings, [(topic, poison), (topic, good)])
        wait_until(lambda: count_rows(clean_db, fleet.prefix) >= 1, 15)
        wait_until(lambda: acked_all(worker), 15)
    figures = scrape(worker.metrics_port)
    assert figures["parksense_ingest_dead_letters_unstorable_total"] == 1
    assert figures["parksense_ingest_dead_letters_minimal_total"] == 0
    assert dead_letter_messages(clean_db, fleet.prefix) == []
    log = worker.log_path.read_text()
    assert "Not even a minimal dead letter" in log
    assert marker not in log
    assert worker.process is not None
    assert worker.process.poll() is None
