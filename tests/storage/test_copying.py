"""Chunked COPY: the rows reach the table byte for byte as ``write_row`` would send them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.copy import AsyncLibpqWriter

from services.storage.copying import copy_rows

_TABLE = """
CREATE TEMP TABLE copied (
    device_id text, metric text, ts timestamptz, value double precision, value_text text,
    received_at timestamptz
)
"""
_COPY = "COPY copied FROM STDIN (FORMAT BINARY)"
_TYPES = ["text", "text", "timestamptz", "float8", "text", "timestamptz"]
T0 = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)

# Text that a text-format COPY would have to escape, and timestamps with microseconds.
_ROWS = [
    ("d1", "power_kw", T0, 12.5, None, T0 + timedelta(seconds=1)),
    ("d1", "state", T0, None, "tab\there", T0),
    ("d-ü", "label", T0 + timedelta(microseconds=1), None, "back\\slash\nnew\rline", T0),
    ("d2", "temp_c", T0 - timedelta(days=400, microseconds=7), -0.0, "€ 𝄞 \\N", T0),
    ("d3", "energy_kwh", T0, 1e308, "", T0),
]
# Enough rows for several of the formatter's 32 KiB buffers.
_MANY = [
    (f"dev-{i:05d}", "output_units", T0 + timedelta(milliseconds=i), i / 3, None, T0)
    for i in range(5_000)
]


class _Recording(AsyncLibpqWriter):
    """Sends COPY data as usual and keeps a copy of every byte sent."""

    def __init__(self, cursor: psycopg.AsyncCursor[tuple[object, ...]]) -> None:
        super().__init__(cursor)
        self.sent = bytearray()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await super().write(data)


async def _copy(conninfo: str, rows: Sequence[tuple[object, ...]], *, chunked: bool) -> bytes:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn, conn.cursor() as cur:
        await cur.execute(_TABLE)
        writer = _Recording(cur)
        async with cur.copy(_COPY, writer=writer) as copy:
            copy.set_types(_TYPES)
            if chunked:
                await copy_rows(copy, rows)
            else:
                for row in rows:
                    await copy.write_row(row)
        await cur.execute("SELECT * FROM copied")
        assert await cur.fetchall() == list(rows)
        return bytes(writer.sent)


def test_chunked_rows_are_the_bytes_write_row_sends(clean_db: str) -> None:
    """None, escapes, unicode and microseconds: the same bytes, and the rows come back."""
    for rows in (_ROWS, _MANY, []):
        chunked = asyncio.run(_copy(clean_db, rows, chunked=True))
        assert chunked == asyncio.run(_copy(clean_db, rows, chunked=False))
