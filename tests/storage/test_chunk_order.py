"""Closed chunks are rewritten in device order, once, without changing what they hold."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.storage import chunk_order
from tests.harness.storage import chunks, load, physical_keys, reading, t, write_batches


@pytest.mark.parametrize("table", chunk_order.REORDERED_TABLES)
def test_closed_chunks_are_rewritten_in_key_order_once(clean_db: str, table: str) -> None:
    """Rows written in time order end up in key order, unchanged, and are rewritten once."""
    load(clean_db)
    # Time order across devices, as ingest writes them: a batch a minute, every device.
    write_batches(
        clean_db,
        [
            [
                reading(device, "power_kw", t(10, m, s), m + s)
                for s in (0, 30)
                for device in ("m1", "m2", "m3")
            ]
            for m in range(20)
        ],
    )
    (chunk,) = chunks(clean_db, table)
    stored = sorted(physical_keys(clean_db, chunk, table))
    assert physical_keys(clean_db, chunk, table) != stored

    async def reorder(closed_before: datetime) -> list[str]:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            return await chunk_order.reorder_closed_chunks(
                conn, closed_before=closed_before, table=table, max_chunks=5
            )

    assert asyncio.run(reorder(t(10, 0))) == []  # not closed yet
    later = datetime(2027, 1, 1, tzinfo=UTC)
    assert asyncio.run(reorder(later)) == [chunk]
    assert physical_keys(clean_db, chunk, table) == stored
    assert asyncio.run(reorder(later + timedelta(days=1))) == []


def test_only_the_device_tables_are_reordered(clean_db: str) -> None:
    """Any other table name is refused before anything runs."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            with pytest.raises(ValueError, match="not reordered"):
                await chunk_order.reorder_closed_chunks(
                    conn, closed_before=t(10, 0), table="park_1m"
                )

    asyncio.run(run())
