"""CSV answers: ``Accept: text/csv`` on the point endpoints, streamed page by page.

A route asks ``wants_csv(request)`` (JSON stays the default; an ``Accept`` that takes
neither is a 406 problem) and answers ``csv_response(header, pages)``. The pages come from
a server-side cursor or paged queries on a connection of the stream's own, so a year of
minutes is written out a page at a time, never held. Exports hold a pool connection for
their whole length, so only ``MAX_EXPORTS`` run at once per API process; more get a 503.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.api.problems import ProblemError
from services.core.media import negotiate

JSON = "application/json"
CSV = "text/csv"
_OFFERED = (JSON, CSV)
# Rows fetched per page: ~100 KB of CSV, one network write each.
PAGE_ROWS = 2000
# CSV exports running at once per API process (each holds one pool connection).
MAX_EXPORTS = 4
_RETRY_AFTER_S = "5"

Cell = datetime | float | int | str | None


def wants_csv(request: Request) -> bool:
    """Whether the request's ``Accept`` prefers CSV over JSON.

    Raises:
        ProblemError: 406, the ``Accept`` header takes neither JSON nor CSV.
    """
    chosen = negotiate(request.headers.get("accept"), _OFFERED)
    if chosen is None:
        raise ProblemError(
            406, "Not Acceptable", f"this resource is served as {JSON} (default) or {CSV}"
        )
    return chosen == CSV


def csv_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a route that also answers CSV (200 and 406)."""
    return {
        200: {
            "description": description,
            "content": {CSV: {"schema": {"type": "string"}}},
        },
        406: {"description": "The Accept header takes neither application/json nor text/csv"},
    }


def cell(value: Cell) -> str:
    """One CSV cell: RFC 3339 UTC for times, ``repr`` for floats, empty for null."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _lines(rows: Iterable[Sequence[Cell]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue()


class _Slots:
    """The exports running in one API process."""

    def __init__(self) -> None:
        self.free = asyncio.Semaphore(MAX_EXPORTS)


def _slots(request: Request) -> _Slots:
    slots: _Slots | None = getattr(request.app.state, "csv_slots", None)
    if slots is None:
        slots = _Slots()
        request.app.state.csv_slots = slots
    return slots


PageSource = Callable[[AsyncConnection], AsyncIterator[Sequence[Sequence[Cell]]]]


async def csv_response(
    request: Request, filename: str, header: Sequence[str], pages: PageSource
) -> StreamingResponse:
    """Stream ``header`` and then every page ``pages`` yields on a connection of its own.

    Raises:
        ProblemError: 503, ``MAX_EXPORTS`` exports are already running.
    """
    slots = _slots(request)
    if slots.free.locked():
        raise ProblemError(
            503,
            "Too many exports",
            f"{MAX_EXPORTS} CSV exports are running; retry shortly",
            headers={"Retry-After": _RETRY_AFTER_S},
        )
    pool: AsyncConnectionPool = request.app.state.pool

    async def body() -> AsyncIterator[str]:
        # Taken here, where the stream runs, so a response never sent holds no slot.
        async with slots.free:
            yield _lines([header])
            async with pool.connection() as conn:
                async for page in pages(conn):
                    yield _lines(page)

    return StreamingResponse(
        body(),
        media_type=f"{CSV}; charset=utf-8; header=present",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )
