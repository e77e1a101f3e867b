"""Maintenance harness: the production maintenance loop, run until a condition holds.

Used by the maintenance and storage tests that watch the loop do its work on its own turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from psycopg_pool import AsyncConnectionPool

from services.config import ReorderSettings, RetentionSettings
from services.maintenance import jobs
from tests.harness.waiting import wait_until

# Long enough for a turn of every job in flight to finish once it is told to stop.
STOP_TIMEOUT_S = 30.0


def run_maintenance_until(
    conninfo: str,
    predicate: Callable[[], object],
    timeout_s: float,
    *,
    message: str,
    fold_interval_s: float = 1.0,
    reorder: ReorderSettings | None = None,
) -> None:
    """Run ``run_maintenance`` on a pool of two autocommit connections until ``predicate``.

    The loop is stopped and awaited either way, so a job that failed raises here.

    Raises:
        AssertionError: ``predicate`` did not hold within ``timeout_s``; carries ``message``.
    """

    async def run() -> None:
        async with AsyncConnectionPool(
            conninfo, min_size=1, max_size=2, kwargs={"autocommit": True}
        ) as pool:
            stop = asyncio.Event()
            task = asyncio.create_task(
                jobs.run_maintenance(
                    pool,
                    RetentionSettings(),
                    online_timeout_s=90,
                    stop=stop,
                    fold_interval_s=fold_interval_s,
                    reorder=reorder,
                )
            )
            try:
                # In a thread: the predicate's blocking queries may wait for a lock held by
                # the maintenance task's open transaction, which needs the loop to commit.
                await asyncio.to_thread(wait_until, predicate, timeout_s, message=message)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)

    asyncio.run(run())
