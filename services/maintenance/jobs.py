"""The maintenance jobs: roll-up folding, availability and retention, each on its schedule.

```
every fold_interval_s          ─▶ fold committed dirty keys into the roll-ups (rollups.fold)
every availability_interval_s  ─▶ materialize device_availability up to now - timeout
every interval_s               ─▶ drop raw chunks older than raw_days,
                                  roll-ups and availability older than rollup_days,
                                  dead letters older than dead_letter_days,
                                  delivery accounting older than delivery_days
```
``python -m services.maintenance`` runs them (the only process with background jobs). The
fold runs in a task of its own, so a long availability or retention run never delays it.
Any number of processes may run them: folds take turns on an advisory lock, availability
runs one at a time, and each retention step is one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from services.config import RetentionSettings
from services.storage import rollups
from services.storage.availability import materialize
from services.storage.retention import RetentionResult, apply_retention

logger = logging.getLogger(__name__)

# Called after each fold with its result and the time it committed.
FoldHook = Callable[[rollups.FoldResult, datetime], None]


async def retention_once(
    pool: AsyncConnectionPool, settings: RetentionSettings, *, now: datetime
) -> RetentionResult:
    """Run the retention step once."""
    async with pool.connection() as conn:
        return await apply_retention(
            conn,
            now=now,
            raw_keep=settings.raw_keep,
            rollup_keep=settings.rollup_keep,
            dead_letter_keep=settings.dead_letter_keep,
            delivery_keep=settings.delivery_keep,
        )


async def _fold_loop(
    pool: AsyncConnectionPool, interval_s: float, stop: asyncio.Event, on_fold: FoldHook | None
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with pool.connection() as conn:
                result = await rollups.fold(conn)
            if on_fold is not None:
                on_fold(result, datetime.now(UTC))
        except Exception:  # atop a long-lived task: log, then try at the next turn
            logger.exception("Roll-up fold failed; retrying at its next turn")
        wait_s = max(0.0, interval_s - (time.monotonic() - started))
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait_s)
        except TimeoutError:
            continue


async def _slow_jobs(
    pool: AsyncConnectionPool,
    settings: RetentionSettings,
    online_timeout: timedelta,
    stop: asyncio.Event,
) -> None:
    next_retention = 0.0
    next_availability = 0.0
    while not stop.is_set():
        now_mono = time.monotonic()
        now = datetime.now(UTC)
        if now_mono >= next_availability:
            next_availability = now_mono + settings.availability_interval_s
            try:
                async with pool.connection() as conn:
                    await materialize(conn, now=now, online_timeout=online_timeout)
            except Exception:  # atop a long-lived task: log, then try at the next turn
                logger.exception("Availability job failed; retrying at its next turn")
        if now_mono >= next_retention:
            next_retention = now_mono + settings.interval_s
            try:
                await retention_once(pool, settings, now=now)
            except Exception:  # atop a long-lived task: log, then try at the next turn
                logger.exception("Retention failed; retrying at its next turn")
        wait_s = max(0.0, min(next_availability, next_retention) - time.monotonic())
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait_s)
        except TimeoutError:
            continue


async def run_maintenance(
    pool: AsyncConnectionPool,
    settings: RetentionSettings,
    *,
    online_timeout_s: float,
    stop: asyncio.Event,
    fold_interval_s: float = 1.0,
    on_fold: FoldHook | None = None,
) -> None:
    """Run the fold, retention and the availability job until ``stop`` is set.

    A failed step is logged and tried again at its next turn; the loops themselves only end
    with ``stop`` (or cancellation). ``on_fold`` sees each fold's result and the time it
    committed (for the lag metric).
    """
    timeout = timedelta(seconds=online_timeout_s)
    async with asyncio.TaskGroup() as group:
        group.create_task(_fold_loop(pool, fold_interval_s, stop, on_fold), name="fold")
        group.create_task(_slow_jobs(pool, settings, timeout, stop), name="availability")
