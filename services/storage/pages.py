"""Answers read a page at a time: a server-side cursor in a transaction of its own.

Every paged read (CSV exports of raw readings, device buckets, park metrics) comes through
``cursor_pages``, so however long the range, at most one page is held in the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection


async def cursor_pages(
    conn: AsyncConnection,
    name: str,
    sql: bytes | str,
    params: Any,  # noqa: ANN401 - whatever psycopg binds: a sequence or a mapping
    page_rows: int,
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Run ``sql`` on a cursor named ``name`` and yield its rows ``page_rows`` at a time."""
    async with conn.transaction(), conn.cursor(name=name) as cur:
        await cur.execute(sql, params)
        while page := await cur.fetchmany(page_rows):
            yield page
