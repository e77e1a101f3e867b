"""Per-minute roll-ups, maintained by ingest from the rows a batch actually inserted."""

from __future__ import annotations

import psycopg


async def update_from_fresh(cur: psycopg.AsyncCursor[tuple[object, ...]]) -> None:
    """Fold the rows in ``fresh_readings`` into the roll-ups, inside the writer's transaction.

    The roll-up tables arrive with the signals work (issue 4); until then there is nothing to do.
    """
    del cur
