"""The maintenance jobs: roll-ups, availability, retention, chunk order, each on its schedule.

```
every fold_interval_s          ─▶ fold committed dirty keys into the roll-ups (rollups.fold)
every 10 s of folding          ─▶ vacuum the dirty-key log the folds empty (rollups.vacuum_log)
every availability_interval_s  ─▶ materialize device_availability up to now - timeout
every interval_s               ─▶ drop raw chunks older than raw_days,
                                  roll-ups, park signals and availability older than
                                  rollup_days, dead letters older than dead_letter_days,
                                  delivery accounting older than delivery_days
every reorder.interval_s       ─▶ CLUSTER up to reorder.max_chunks closed chunks (ended
                                  reorder.margin_s ago) of readings_1m, then of readings
```
``python -m services.maintenance`` runs them (the only process with background jobs). The
fold runs in a task of its own, so a long availability, retention or reorder run never
delays it; the three slow jobs share one task and wait for one another. Any number of
processes may run them: folds take turns on an advisory lock, availability runs one at a
time, each retention step is one transaction, and each chunk's CLUSTER is one transaction
that gives up on a chunk it cannot lock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from services.config import ReorderSettings, RetentionSettings
from services.storage import chunk_order, rollups
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


async def reorder_once(
    pool: AsyncConnectionPool, settings: ReorderSettings, *, now: datetime
) -> list[str]:
    """Rewrite up to ``settings.max_chunks`` closed chunks of each reordered table.

    ``readings_1m`` goes first (the device readings endpoint reads it). A chunk is closed
    once its range ended ``settings.margin`` before ``now``.

    Returns:
        The chunks rewritten.
    """
    closed_before = now - settings.margin
    done: list[str] = []
    async with pool.connection() as conn:
        # Each chunk's CLUSTER is a transaction of its own, which reorder_closed_chunks
        # needs autocommit for; the pool gets the connection back in the mode it gave it.
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            for table in chunk_order.REORDERED_TABLES:
                done += await chunk_order.reorder_closed_chunks(
                    conn,
                    closed_before=closed_before,
                    table=table,
                    max_chunks=settings.max_chunks,
                    lock_timeout_s=settings.lock_timeout_s,
                )
        finally:
            if not conn.broken:
                await conn.set_autocommit(autocommit)
    if done:
        logger.info(
            "Reordered %d closed chunks ended before %s: %s",
            len(done),
            closed_before.isoformat(),
            ", ".join(done),
        )
    else:
        logger.debug("No closed chunk ended before %s to reorder", closed_before.isoformat())
    return done


# How often the fold vacuums the invalidation log it keeps emptying (rollups.vacuum_log).
LOG_VACUUM_INTERVAL_S = 10.0


async def _fold_loop(
    pool: AsyncConnectionPool, interval_s: float, stop: asyncio.Event, on_fold: FoldHook | None
) -> None:
    folded_since_vacuum = 0
    next_vacuum = time.monotonic() + LOG_VACUUM_INTERVAL_S
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with pool.connection() as conn:
                result = await rollups.fold(conn)
                folded_since_vacuum += result.keys
                if folded_since_vacuum and started >= next_vacuum:
                    await rollups.vacuum_log(conn)
                    folded_since_vacuum = 0
                    next_vacuum = started + LOG_VACUUM_INTERVAL_S
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
    reorder: ReorderSettings | None,
    stop: asyncio.Event,
) -> None:
    next_retention = 0.0
    next_availability = 0.0
    # Never, without reorder settings or with max_chunks 0.
    next_reorder = 0.0 if reorder is not None and reorder.max_chunks > 0 else math.inf
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
        if reorder is not None and now_mono >= next_reorder:
            next_reorder = now_mono + reorder.interval_s
            try:
                await reorder_once(pool, reorder, now=now)
            except Exception:  # atop a long-lived task: log, then try at the next turn
                logger.exception("Chunk reorder failed; retrying at its next turn")
        next_turn = min(next_availability, next_retention, next_reorder)
        wait_s = max(0.0, next_turn - time.monotonic())
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
    reorder: ReorderSettings | None = None,
) -> None:
    """Run the fold, retention, the availability job and chunk reorder until ``stop`` is set.

    A failed step is logged and tried again at its next turn; the loops themselves only end
    with ``stop`` (or cancellation). ``on_fold`` sees each fold's result and the time it
    committed (for the lag metric). Closed chunks are reordered only with ``reorder``
    (the process passes ``MaintenanceSettings.reorder``).
    """
    timeout = timedelta(seconds=online_timeout_s)
    async with asyncio.TaskGroup() as group:
        group.create_task(_fold_loop(pool, fold_interval_s, stop, on_fold), name="fold")
        group.create_task(_slow_jobs(pool, settings, timeout, reorder, stop), name="slow jobs")
