"""Retention: raw readings dropped by whole chunks, roll-ups by time; the maintenance loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from services.config import IngestSettings, RetentionSettings
from services.storage.retention import apply_retention
from tests.harness.maintenance import run_maintenance_until
from tests.harness.storage import load, reading, rows, status, write

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def days_ago(days: float) -> datetime:
    """NOW minus some days."""
    return NOW - timedelta(days=days)


def test_raw_chunks_and_old_rollups_are_dropped(clean_db: str) -> None:
    """Raw readings go by whole day chunks, roll-ups row by row past their horizon."""
    load(clean_db)
    write(
        clean_db,
        [
            reading("m1", "power_kw", days_ago(40), 1),
            reading("m1", "power_kw", days_ago(31), 2),
            reading("m1", "power_kw", days_ago(29.9), 3),  # inside 30 days
            reading("m1", "power_kw", days_ago(1), 4),
        ],
        [status("m1", days_ago(40), True), status("m1", days_ago(39), False)],
    )

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            result = await apply_retention(
                conn, now=NOW, raw_keep=timedelta(days=30), rollup_keep=timedelta(days=35)
            )
            assert result.raw_chunks_dropped == 2  # the days of the 40- and 31-day readings
            assert result.rollup_chunks_dropped + result.rollup_rows_deleted >= 1

    asyncio.run(run())
    raw = rows(clean_db, "SELECT ts FROM readings ORDER BY ts")
    assert [r["ts"] for r in raw] == [days_ago(29.9), days_ago(1)]
    minutes = rows(clean_db, "SELECT minute FROM readings_1m ORDER BY minute")
    # The 40-day-old minute is past the 35-day horizon; the 31-day one stays as a roll-up.
    assert [m["minute"] for m in minutes] == [
        days_ago(31),
        days_ago(29.9).replace(second=0, microsecond=0),
        days_ago(1),
    ]
    parks = rows(clean_db, "SELECT min(minute) AS first FROM park_1m")
    assert parks[0]["first"] == days_ago(31)
    # The device's newest status event stays even past the horizon: it still decides.
    events = rows(clean_db, "SELECT ts FROM device_status_events")
    assert [e["ts"] for e in events] == [days_ago(39)]


def test_old_park_signal_minutes_go_with_the_rollups(clean_db: str) -> None:
    """park_signals_1m loses its minutes past the roll-up horizon, by chunk and then by row."""
    load(clean_db)
    # The 40-day-old week ends before the 35-day horizon; the next week straddles it.
    minutes = [days_ago(40), days_ago(35.25), days_ago(34), days_ago(1)]
    with psycopg.connect(clean_db) as conn:
        for minute in minutes:
            conn.execute(
                "INSERT INTO park_signals_1m (park_id, minute, as_of, window_s,"
                " devices_registered, devices_online, devices_in_alarm, factories_with_lines,"
                " factories_operating) VALUES ('p1', %s, %s, 300, 6, 6, 0, 2, 2)",
                (minute, minute),
            )

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            result = await apply_retention(
                conn, now=NOW, raw_keep=timedelta(days=30), rollup_keep=timedelta(days=35)
            )
            assert result.rollup_chunks_dropped == 1  # the 40-day-old minute's week
            assert result.rollup_rows_deleted == 1  # the 35.25-day-old one, beside a kept one

    asyncio.run(run())
    kept = rows(clean_db, "SELECT minute FROM park_signals_1m ORDER BY minute")
    assert [k["minute"] for k in kept] == [days_ago(34), days_ago(1)]


def test_settings_read_the_environment_and_refuse_nonsense(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PARKSENSE_RETENTION_* set the horizons; roll-ups may not be kept shorter than raw."""
    monkeypatch.setenv("PARKSENSE_RETENTION_RAW_DAYS", "7")
    monkeypatch.setenv("PARKSENSE_RETENTION_ROLLUP_DAYS", "365")
    settings = RetentionSettings()
    assert (settings.raw_keep, settings.rollup_keep) == (timedelta(days=7), timedelta(days=365))
    assert RetentionSettings.model_fields["raw_days"].default == 30.0
    assert RetentionSettings.model_fields["rollup_days"].default == 730.0
    monkeypatch.setenv("PARKSENSE_RETENTION_ROLLUP_DAYS", "3")
    with pytest.raises(ValidationError, match="rollup_days"):
        RetentionSettings()


def test_ingest_refuses_readings_past_the_one_raw_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest's oldest accepted reading is the raw retention; its former variable still works."""
    monkeypatch.delenv("PARKSENSE_RETENTION_RAW_DAYS", raising=False)
    monkeypatch.setenv("PARKSENSE_INGEST_RETENTION_DAYS", "12")
    assert RetentionSettings().raw_days == 12.0
    assert IngestSettings().retention_days == 12.0
    monkeypatch.setenv("PARKSENSE_RETENTION_RAW_DAYS", "9")
    assert (RetentionSettings().raw_days, IngestSettings().retention_days) == (9.0, 9.0)
    assert RetentionSettings(raw_days=5).raw_keep == timedelta(days=5)


def test_maintenance_loop_runs_both_jobs_until_stopped(clean_db: str) -> None:
    """The loop settles availability and applies retention, then stops when told."""
    load(clean_db)
    recent = datetime.now(UTC) - timedelta(minutes=30)
    write(clean_db, [reading("m1", "power_kw", recent, 1)])
    write(clean_db, [reading("m1", "power_kw", datetime.now(UTC) - timedelta(days=45), 1)])

    def retained_and_settled() -> bool:
        # Counting scans every chunk while retention drops one: PostgreSQL may pick the
        # count as a deadlock's victim (40P01), then it is only asked again.
        try:
            found = rows(clean_db, "SELECT count(*) AS n FROM readings")
        except psycopg.errors.DeadlockDetected:
            return False
        settled = rows(clean_db, "SELECT settled_to FROM availability_progress")
        return found[0]["n"] == 1 and bool(settled) and settled[0]["settled_to"] is not None

    run_maintenance_until(
        clean_db, retained_and_settled, 30, message="maintenance never retained and settled"
    )
    assert rows(clean_db, "SELECT count(*) AS n FROM readings")[0]["n"] == 1
    transitions = rows(clean_db, "SELECT ts, online, reason FROM device_availability ORDER BY ts")
    assert [(t["online"], t["reason"]) for t in transitions][-2:] == [
        (True, "reading"),
        (False, "silence"),
    ]
