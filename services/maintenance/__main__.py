"""Run the maintenance process: ``python -m services.maintenance`` or ``parksense maintenance``."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime

from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from services.config import (
    DatabaseSettings,
    MaintenanceSettings,
    MqttSettings,
    RetentionSettings,
    SharingSettings,
)
from services.maintenance.jobs import run_maintenance
from services.maintenance.sharing import SignalsPublisher
from services.startup import serve_metrics, start_logging, stop_on_signals
from services.storage.rollups import FoldResult

logger = logging.getLogger("services.maintenance")

_FOLD_LAG = Gauge(
    "parksense_rollup_fold_lag_seconds",
    "Seconds from the oldest commit a fold took to that fold's commit",
)
_FOLD_KEYS = Counter("parksense_rollup_fold_keys_total", "Dirty roll-up keys folded")


def _observe(result: FoldResult, folded_at: datetime) -> None:
    if result.oldest_committed_at is not None:
        _FOLD_LAG.set((folded_at - result.oldest_committed_at).total_seconds())
        _FOLD_KEYS.inc(result.keys)
    else:
        _FOLD_LAG.set(0.0)


async def _serve(
    settings: MaintenanceSettings, retention: RetentionSettings, database: DatabaseSettings
) -> None:
    stop = stop_on_signals()
    pool = AsyncConnectionPool(
        database.conninfo(application_name="parksense-maintenance"),
        min_size=2,
        max_size=3,
        open=False,
        kwargs={"autocommit": True},
    )
    # Not waiting: each job retries at its next turn while the database is away.
    await pool.open(wait=False)
    sharing = _signals_publisher(settings, database)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(sharing.run(stop))
            tasks.create_task(
                run_maintenance(
                    pool,
                    retention,
                    online_timeout_s=settings.online_timeout_s,
                    stop=stop,
                    fold_interval_s=settings.fold_interval_s,
                    on_fold=_observe,
                    reorder=settings.reorder,
                )
            )
    finally:
        await pool.close()


def _signals_publisher(
    settings: MaintenanceSettings, database: DatabaseSettings
) -> SignalsPublisher:
    """The park signals publisher; it publishes on MQTT when it has a credential to."""
    mqtt = MqttSettings()
    if mqtt.username is None:
        logger.info("Park signals are recorded, not published: PARKSENSE_MQTT_USERNAME is unset")
    else:
        logger.info(
            "Sharing park signals on MQTT at %s:%d as %s", mqtt.host, mqtt.port, mqtt.username
        )
    return SignalsPublisher(
        database.conninfo(application_name="parksense-signals"),
        SharingSettings(),
        mqtt if mqtt.username is not None else None,
        online_timeout_s=settings.online_timeout_s,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the maintenance jobs; settings come from ``PARKSENSE_*`` environment variables."""
    start_logging("parksense maintenance", __doc__, argv)
    settings = MaintenanceSettings()
    serve_metrics(settings.metrics_port, logger)
    logger.info("Folding roll-ups every %.1f s", settings.fold_interval_s)
    if settings.reorder.max_chunks > 0:
        logger.info(
            "Reordering up to %d closed chunks per table every %.0f s, %.0f s after they end",
            settings.reorder.max_chunks,
            settings.reorder.interval_s,
            settings.reorder.margin_s,
        )
    asyncio.run(_serve(settings, RetentionSettings(), DatabaseSettings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
