"""Maintenance rewrites closed chunks in device order on its own turn, leaving values alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from services.config import MaintenanceSettings, ReorderSettings
from services.maintenance.jobs import reorder_once
from services.storage.chunk_order import REORDERED_TABLES
from tests.harness.maintenance import run_maintenance_until
from tests.harness.storage import chunks, load, physical_keys, reading, rows, write_batches

# Each chunk with whether CLUSTER marked its primary key (pg_index.indisclustered).
_CLUSTERED_SQL = """
SELECT c.chunk_schema || '.' || c.chunk_name AS chunk, c.range_end, i.indisclustered
FROM timescaledb_information.chunks c
JOIN pg_class t ON t.relname = c.chunk_name
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = c.chunk_schema
JOIN pg_index i ON i.indrelid = t.oid AND i.indisprimary
WHERE c.hypertable_name = %s
ORDER BY c.range_start
"""


def clustered(db: str, table: str) -> dict[str, bool]:
    """Each chunk of ``table`` and whether it was clustered on its primary key."""
    return {r["chunk"]: r["indisclustered"] for r in rows(db, _CLUSTERED_SQL, (table,))}


def range_end(db: str, table: str) -> datetime:
    """The end of the newest chunk of ``table``."""
    end: datetime = rows(db, _CLUSTERED_SQL, (table,))[-1]["range_end"]
    return end


def contents(db: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of both reordered tables, in key order."""
    return {
        "readings": rows(db, "SELECT * FROM readings ORDER BY device_id, metric, ts"),
        "readings_1m": rows(db, "SELECT * FROM readings_1m ORDER BY device_id, metric, minute"),
    }


def write_in_time_order(db: str, start: datetime, minutes: int = 20) -> None:
    """Readings of three devices a batch a minute, as ingest writes them, folded."""
    write_batches(
        db,
        [
            [
                reading(device, "power_kw", start + timedelta(minutes=m, seconds=s), m + s)
                for s in (0, 30)
                for device in ("m1", "m2", "m3")
            ]
            for m in range(minutes)
        ],
    )


def test_maintenance_loop_reorders_the_closed_chunks_of_both_tables(clean_db: str) -> None:
    """run_maintenance clusters the old chunks of both tables; open ones stay as written."""
    load(clean_db)
    now = datetime.now(UTC)
    # Closed in both tables; ten in the morning, so that the minutes stay in one chunk.
    write_in_time_order(clean_db, (now - timedelta(days=20)).replace(hour=10, minute=0))
    write_in_time_order(clean_db, now - timedelta(minutes=10), minutes=2)  # open chunks
    before = contents(clean_db)
    old = {table: chunks(clean_db, table)[0] for table in REORDERED_TABLES}
    for table, chunk in old.items():
        assert physical_keys(clean_db, chunk, table) != sorted(
            physical_keys(clean_db, chunk, table)
        )

    def reordered() -> bool:
        return all(clustered(clean_db, table)[chunk] for table, chunk in old.items())

    run_maintenance_until(
        clean_db,
        reordered,
        30,
        message="maintenance never reordered a chunk",
        reorder=MaintenanceSettings().reorder,
    )
    for table, chunk in old.items():
        keys = physical_keys(clean_db, chunk, table)
        assert keys == sorted(keys)
        newest = chunks(clean_db, table)[-1]
        assert newest != chunk
        assert not clustered(clean_db, table)[newest]  # still open: left as written
    assert contents(clean_db) == before


def test_a_chunk_ended_inside_the_margin_is_left_for_a_later_run(clean_db: str) -> None:
    """Only chunks that ended a margin ago are rewritten; the pooled connection is given back."""
    load(clean_db)
    write_in_time_order(clean_db, datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    before = contents(clean_db)
    ends = {table: range_end(clean_db, table) for table in REORDERED_TABLES}
    settings = ReorderSettings(margin_s=3600)

    async def run() -> None:
        # Not autocommit: the job switches it on for the CLUSTER and back off after.
        async with AsyncConnectionPool(clean_db, min_size=1, max_size=1) as pool:
            inside = min(ends.values()) + timedelta(minutes=59)
            assert await reorder_once(pool, settings, now=inside) == []
            assert not any(any(clustered(clean_db, table).values()) for table in ends)
            past = max(ends.values()) + timedelta(hours=1)
            done = await reorder_once(pool, settings, now=past)
            assert done == [chunks(clean_db, table)[0] for table in REORDERED_TABLES]
            assert await reorder_once(pool, settings, now=past) == []  # each chunk once
            async with pool.connection() as conn:
                assert not conn.autocommit

    asyncio.run(run())
    assert all(all(clustered(clean_db, table).values()) for table in ends)
    assert contents(clean_db) == before


def test_each_run_rewrites_at_most_max_chunks_per_table(clean_db: str) -> None:
    """With two closed raw chunks and max_chunks 1, a run takes the older one only."""
    load(clean_db)
    write_in_time_order(clean_db, datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    write_in_time_order(clean_db, datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    older, newer = chunks(clean_db, "readings")
    later = datetime(2027, 1, 1, tzinfo=UTC)

    async def run() -> list[list[str]]:
        async with AsyncConnectionPool(
            clean_db, min_size=1, max_size=1, kwargs={"autocommit": True}
        ) as pool:
            return [
                await reorder_once(pool, ReorderSettings(max_chunks=1), now=later) for _ in range(2)
            ]

    first, second = asyncio.run(run())
    assert [c for c in first if c in (older, newer)] == [older]
    assert newer in second
    assert len(first) <= len(REORDERED_TABLES)


def test_reorder_settings_read_the_environment_and_refuse_nonsense(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PARKSENSE_MAINTENANCE_REORDER_* tune the job; max_chunks 0 turns it off."""
    assert (
        ReorderSettings().interval_s,
        ReorderSettings().margin,
        ReorderSettings().max_chunks,
    ) == (
        600.0,
        timedelta(hours=1),
        1,
    )
    monkeypatch.setenv("PARKSENSE_MAINTENANCE_REORDER_INTERVAL_S", "60")
    monkeypatch.setenv("PARKSENSE_MAINTENANCE_REORDER_MARGIN_S", "7200")
    monkeypatch.setenv("PARKSENSE_MAINTENANCE_REORDER_MAX_CHUNKS", "0")
    reorder = MaintenanceSettings().reorder
    assert (reorder.interval_s, reorder.margin, reorder.max_chunks) == (
        60.0,
        timedelta(hours=2),
        0,
    )
    for name, value in (("INTERVAL_S", "0"), ("MARGIN_S", "-1"), ("MAX_CHUNKS", "101")):
        monkeypatch.setenv(f"PARKSENSE_MAINTENANCE_REORDER_{name}", value)
        with pytest.raises(ValidationError):
            ReorderSettings()
        monkeypatch.delenv(f"PARKSENSE_MAINTENANCE_REORDER_{name}")
