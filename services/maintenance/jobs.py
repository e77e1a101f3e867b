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
from typing import Self

from psycopg_pool import AsyncConnectionPool
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.storage import rollups
from services.storage.availability import materialize
from services.storage.retention import RetentionResult, apply_retention

logger = logging.getLogger(__name__)

# Called after each fold with its result and the time it committed.
FoldHook = Callable[[rollups.FoldResult, datetime], None]


class RetentionSettings(BaseSettings):
    """How long data is kept and how often the job runs (``PARKSENSE_RETENTION_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARKSENSE_RETENTION_", extra="ignore")

    # Raw readings; ingest refuses readings older than this (IngestSettings.retention_days
    # must not exceed it, or late data would land in minutes whose raw rows are gone).
    raw_days: float = Field(default=30.0, gt=0)
    # Per-minute roll-ups, park minutes, availability transitions and status events.
    rollup_days: float = Field(default=730.0, gt=0)
    # Refused messages (dead_letters, dead_letter_messages): as long as a stored reading,
    # so that a refusal can be looked into for as long as the data it concerns is there.
    dead_letter_days: float = Field(default=30.0, gt=0)
    # Per-park delivery accounting per minute (delivery_1m): as long as the dead letters,
    # since a delivery report counts refusals from them.
    delivery_days: float = Field(default=30.0, gt=0)
    # Dropping chunks is cheap; hourly keeps at most a day and an hour of extra raw data.
    interval_s: float = Field(default=3600.0, gt=0)
    availability_interval_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.rollup_days < self.raw_days:
            raise ValueError("rollup_days must not be shorter than raw_days")
        return self

    @property
    def raw_keep(self) -> timedelta:
        """How long raw readings are kept."""
        return timedelta(days=self.raw_days)

    @property
    def rollup_keep(self) -> timedelta:
        """How long roll-ups are kept."""
        return timedelta(days=self.rollup_days)

    @property
    def dead_letter_keep(self) -> timedelta:
        """How long dead letters are kept."""
        return timedelta(days=self.dead_letter_days)

    @property
    def delivery_keep(self) -> timedelta:
        """How long per-minute delivery accounting is kept."""
        return timedelta(days=self.delivery_days)


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
