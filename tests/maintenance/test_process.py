"""``python -m services.maintenance``: folds roll-ups, settles availability, applies retention."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from services.config import DatabaseSettings
from services.stack.stack import PROJECT_ROOT, settings_env
from tests.harness.storage import load, reading, rows, write_batches
from tests.harness.waiting import wait_until


def count(conninfo: str, query: str) -> int:
    """The single number a query answers."""
    return int(next(iter(rows(conninfo, query)[0].values())))


def test_maintenance_process_folds_settles_and_applies_retention(
    db_settings: DatabaseSettings, clean_db: str
) -> None:
    """The process folds committed keys, settles availability, drops old chunks, stops on TERM."""
    load(clean_db)
    now = datetime.now(UTC)
    # Three readings inside one minute half an hour ago, whatever second the test starts at.
    minute_ago = (now - timedelta(minutes=30)).replace(second=0, microsecond=0)
    recent = [
        reading("m1", "power_kw", minute_ago + timedelta(seconds=10 + s), s) for s in range(3)
    ]
    old = [reading("m1", "power_kw", now - timedelta(days=45), 1)]
    write_batches(clean_db, [recent, old], fold_every=3, fold_at_end=False)
    assert count(clean_db, "SELECT count(*) FROM rollup_dirty") == 2
    env = {
        **os.environ,
        **settings_env(db_settings),
        "PARKSENSE_MAINTENANCE_FOLD_INTERVAL_S": "0.2",
        "PARKSENSE_RETENTION_AVAILABILITY_INTERVAL_S": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.maintenance"],
        cwd=PROJECT_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            # The chunk catalogue, not the table: a scan of the chunks could deadlock with
            # drop_chunks (each locks chunks one by one) and be the one cancelled.
            lambda: (
                count(
                    clean_db,
                    "SELECT count(*) FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = 'readings'",
                )
                == 1
            ),
            30,
            message="retention never dropped the 45-day-old chunk",
        )
        wait_until(
            lambda: count(clean_db, "SELECT count(*) FROM rollup_dirty") == 0,
            30,
            message="the fold never took the dirty keys",
        )
        wait_until(
            lambda: (
                count(
                    clean_db,
                    "SELECT count(*) FROM availability_progress WHERE settled_to IS NOT NULL",
                )
                == 1
            ),
            30,
            message="availability never settled",
        )
        [minute] = rows(
            clean_db, "SELECT n FROM readings_1m WHERE minute > now() - interval '1 day'"
        )
        assert minute["n"] == len(recent)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
