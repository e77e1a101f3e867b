"""Dead-letter storage: the payload once per message, pruned by retention, migrated in place."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings, RetentionSettings
from services.core.batching import Batch
from services.core.deadletters import dead_letter
from services.core.readings import Rejection, RejectReason
from services.core.validate import Limits, judge_message
from services.stack.postgres import PostgresCluster
from services.storage.migrate import apply_migrations, load_migrations
from services.storage.retention import apply_retention
from services.storage.writer import BatchWriter
from tests.harness.environment import LOCAL_URL
from tests.harness.small_fleet import registry
from tests.harness.storage import load, rows

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TOPIC = "parksense/v1/p1/f1/e1/telemetry"


def write_letters(conninfo: str, batch: Batch) -> None:
    """Write a batch of dead letters with the production writer."""

    async def run() -> None:
        writer = BatchWriter(conninfo)
        await writer.connect()
        try:
            await writer.write(batch)
        finally:
            await writer.close()

    asyncio.run(run())


def refused_letter(payload: bytes, received_at: datetime = NOW) -> Batch:
    """The judged dead letter of one message on e1's telemetry topic."""
    outcome = judge_message(TOPIC, payload, registry(), received_at, Limits())
    return Batch(dead_letters=[dead_letter(*outcome.rejections)])


def test_api_lists_each_reason_of_a_message_with_its_payload(
    clean_db: str, db_settings: DatabaseSettings
) -> None:
    """/v1/dead-letters keeps its fields and adds message_id, refused and metrics."""
    load(clean_db)
    payload = orjson.dumps(
        {"ts": NOW.isoformat(), "metrics": {"volts": 1, "amps": 2, "temp_c": 900}}
    )
    write_letters(clean_db, refused_letter(payload))
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as api:
        body = api.get("/v1/dead-letters").json()
        unknown = api.get("/v1/dead-letters", params={"reason": "unknown_metric"}).json()
    assert body["count"] == 2
    entries = sorted(body["data"], key=lambda e: e["id"])
    assert [(e["reason"], e["refused"], e["metrics"], e["metric"]) for e in entries] == [
        ("unknown_metric", 2, ["volts", "amps"], "volts"),
        ("out_of_range", 1, ["temp_c"], "temp_c"),
    ]
    assert {e["message_id"] for e in entries} == {entries[0]["message_id"]}
    for entry in entries:
        assert entry["payload"] == payload.decode()
        assert entry["payload_encoding"] == "utf-8"
        assert (entry["topic"], entry["park_id"], entry["device_id"]) == (TOPIC, "p1", "e1")
        assert entry["ts"] is not None
        assert entry["detail"]
    assert [e["reason"] for e in unknown["data"]] == ["unknown_metric"]


def test_retention_prunes_old_dead_letters_and_delivery_minutes(clean_db: str) -> None:
    """Dead letters and delivery_1m rows older than their horizons go; newer ones stay."""
    load(clean_db)
    old, recent = NOW - timedelta(days=31), NOW - timedelta(days=29)
    for received_at in (old, recent):
        payload = orjson.dumps({"ts": received_at.isoformat(), "metrics": {"volts": 1}})
        write_letters(clean_db, refused_letter(payload, received_at))
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO delivery_1m (park_id, minute, accepted, stored)"
            " VALUES ('p1', %s, 1, 1), ('p1', %s, 2, 2)",
            (old, recent),
        )

    async def run() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            result = await apply_retention(
                conn,
                now=NOW,
                raw_keep=timedelta(days=30),
                rollup_keep=timedelta(days=730),
                dead_letter_keep=timedelta(days=30),
                delivery_keep=timedelta(days=30),
            )
        return result.dead_letters_deleted, result.delivery_rows_deleted

    assert asyncio.run(run()) == (1, 1)
    assert [r["received_at"] for r in rows(clean_db, "SELECT received_at FROM dead_letters")] == [
        recent
    ]
    messages = rows(clean_db, "SELECT received_at FROM dead_letter_messages")
    assert [r["received_at"] for r in messages] == [recent]
    assert [r["minute"] for r in rows(clean_db, "SELECT minute FROM delivery_1m")] == [recent]


def test_migration_turns_old_dead_letters_into_messages(pg_cluster: PostgresCluster) -> None:
    """Rows from before 0012 keep their payload, now once per distinct message."""
    name = "parksense_migrate_dead_letters"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
    pg_cluster.ensure_database(name)
    conninfo = pg_cluster.conninfo(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in load_migrations():
            if migration.version < 12:  # the migrations before dead_letter_messages
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        # Two per-reading rows of one message, one row of another, one without payload.
        conn.execute(
            "INSERT INTO dead_letters (received_at, reason, detail, topic, metric, payload)"
            " VALUES (%(t)s, 'unknown_metric', 'a', 'x', 'volts', 'same'),"
            " (%(t)s, 'unknown_metric', 'b', 'x', 'amps', 'same'),"
            " (%(t)s, 'malformed_json', 'c', 'y', NULL, 'other'),"
            " (%(t)s, 'storage_rejected', 'd', '', 'temp_c', NULL)",
            {"t": NOW},
        )
    assert apply_migrations(conninfo)[0] == 12
    got = rows(
        conninfo,
        "SELECT d.detail, d.metric, d.metrics, d.refused, m.payload"
        " FROM dead_letters d JOIN dead_letter_messages m USING (message_id) ORDER BY d.id",
    )
    assert [(r["detail"], r["metrics"], r["refused"], r["payload"]) for r in got] == [
        ("a", ["volts"], 1, b"same"),
        ("b", ["amps"], 1, b"same"),
        ("c", [], 1, b"other"),
        ("d", ["temp_c"], 1, None),
    ]
    assert rows(conninfo, "SELECT count(*) AS n FROM dead_letter_messages")[0]["n"] == 3
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")


def test_storage_rejected_letter_without_payload_is_written(clean_db: str) -> None:
    """A dead letter the database made (no topic, no payload) is stored like any other."""
    load(clean_db)
    rejection = Rejection(
        RejectReason.STORAGE_REJECTED, "refused", "", NOW, device_id="e1", metric="temp_c", ts=NOW
    )
    write_letters(clean_db, Batch(dead_letters=[dead_letter(rejection)]))
    got = rows(
        clean_db,
        "SELECT d.reason, d.metric, m.payload FROM dead_letters d"
        " JOIN dead_letter_messages m USING (message_id)",
    )
    assert got == [{"reason": "storage_rejected", "metric": "temp_c", "payload": None}]


def test_dead_letter_and_delivery_horizons_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PARKSENSE_RETENTION_DEAD_LETTER_DAYS and _DELIVERY_DAYS set the horizons (30 d each)."""
    assert RetentionSettings().dead_letter_keep == timedelta(days=30)
    assert RetentionSettings().delivery_keep == timedelta(days=30)
    monkeypatch.setenv("PARKSENSE_RETENTION_DEAD_LETTER_DAYS", "7")
    monkeypatch.setenv("PARKSENSE_RETENTION_DELIVERY_DAYS", "90")
    settings = RetentionSettings()
    assert (settings.dead_letter_keep, settings.delivery_keep) == (
        timedelta(days=7),
        timedelta(days=90),
    )
    monkeypatch.setenv("PARKSENSE_RETENTION_DEAD_LETTER_DAYS", "0")
    with pytest.raises(ValidationError, match="dead_letter_days"):
        RetentionSettings()
