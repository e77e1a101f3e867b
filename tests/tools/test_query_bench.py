"""The query benchmark's generation resumes at the first day it did not finish."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from tests.harness.storage import load
from tools.query_bench import _resume_point

START = datetime(2026, 11, 1, 16, 41, tzinfo=UTC)


def test_resuming_starts_at_the_first_day_without_roll_ups(clean_db: str) -> None:
    """Two whole days and part of a third: the third is made again, the end is kept."""
    load(clean_db)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        assert _resume_point(clean_db, 30) is None  # nothing generated: start afresh
        for ts in (START, START + timedelta(days=2, hours=3)):
            conn.execute(
                "INSERT INTO readings (device_id, metric, ts, value, received_at)"
                " VALUES ('m1', 'power_kw', %s, 1, %s)",
                (ts, ts),
            )
        assert _resume_point(clean_db, 30) == (START, START + timedelta(days=30), START)
        conn.execute(
            "INSERT INTO park_1m (park_id, minute, devices_reporting, lines_reporting_state,"
            " lines_running, factories_operating, lines_reporting_output, output_units,"
            " meters_reporting_power, power_kw, energy_reporting, energy_kwh,"
            " alarm_devices_reporting, devices_in_alarm)"
            " VALUES ('p1', %s, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0)",
            (START + timedelta(days=2) - timedelta(minutes=1),),
        )
    assert _resume_point(clean_db, 30) == (
        START,
        START + timedelta(days=30),
        START + timedelta(days=2),
    )
