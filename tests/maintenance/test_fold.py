"""The roll-up fold: redelivery never counts twice, a fold killed half-way loses nothing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from services.core.readings import Reading
from services.maintenance import jobs
from services.storage.rollups import FoldResult, fold, rebuild, vacuum_log
from tests.harness.maintenance import run_maintenance_until
from tests.harness.storage import fold_now, load, reading, rows, t, write_batches
from tests.harness.waiting import wait_until

ROLLUP_QUERIES = {
    "readings_1m": "SELECT * FROM readings_1m ORDER BY device_id, metric, minute",
    "readings_15m": "SELECT * FROM readings_15m ORDER BY device_id, metric, quarter",
    "park_1m": "SELECT * FROM park_1m ORDER BY park_id, minute",
    "park_metric_1m": "SELECT * FROM park_metric_1m ORDER BY park_id, metric, minute",
    "park_1h": "SELECT * FROM park_1h ORDER BY park_id, hour",
}


@pytest.fixture
def db(clean_db: str) -> str:
    """A clean database with the test fleet loaded."""
    load(clean_db)
    return clean_db


def batch(minute_from: int, minutes: int, offset: int = 0) -> list[Reading]:
    """Counters that restart, a gauge and a state over some minutes after 10:00."""
    return [
        reading(device, metric, t(10, m, s), value(m, s))
        for m in range(minute_from, minute_from + minutes)
        for s in range(offset, 60, 7)
        for device, metric, value in (
            ("l1", "output_units", lambda m, s: float((m * 60 + s) % 41)),
            ("m1", "energy_kwh", lambda m, s: float((m * 60 + s) % 29)),
            ("m1", "power_kw", lambda m, s: float(m + s)),
            ("l1", "state", lambda m, s: "running" if (m + s) % 3 else "fault"),
        )
    ]


def rollups(conninfo: str) -> dict[str, list[dict[str, Any]]]:
    """Every roll-up table's rows, in key order."""
    return {name: rows(conninfo, query) for name, query in ROLLUP_QUERIES.items()}


def rebuilt(conninfo: str) -> dict[str, list[dict[str, Any]]]:
    """The roll-ups recomputed from the raw readings by ``rebuild``."""

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            await rebuild(conn, t(9, 0), t(12, 0))

    asyncio.run(run())
    return rollups(conninfo)


def test_redelivered_batch_never_counts_twice_in_any_rollup(db: str) -> None:
    """A batch delivered again, folded with it or after it, leaves every roll-up as once."""
    first, late = batch(0, 4), batch(1, 2, offset=3)
    write_batches(db, [first])
    once = rollups(db)
    # Redelivered before the next fold (both copies' keys in the log), then after it.
    write_batches(db, [first, first], fold_every=3)
    assert rollups(db) == once
    write_batches(db, [first])
    assert rollups(db) == once
    # Half new, half redelivered: only the new half counts.
    results = write_batches(db, [first[:20] + late])
    assert results[0].inserted == len(late)
    with_late = rollups(db)
    assert with_late != once
    assert with_late == rebuilt(db)
    assert rows(db, "SELECT count(*) AS n FROM rollup_dirty") == [{"n": 0}]


def test_fold_killed_half_way_and_run_again_loses_and_doubles_nothing(db: str) -> None:
    """A fold whose backend is killed mid-way rolls back; the next fold gives exact roll-ups."""
    write_batches(db, [batch(0, 2)])
    write_batches(db, [batch(2, 3), batch(0, 3, offset=2)], fold_every=3, fold_at_end=False)
    dirty = rows(db, "SELECT count(*) AS n FROM rollup_dirty")[0]["n"]
    assert dirty > 0
    before = rollups(db)
    failures: list[BaseException] = []

    def folding() -> None:
        async def run() -> None:
            async with await psycopg.AsyncConnection.connect(
                db, autocommit=True, application_name="fold-under-test"
            ) as conn:
                await fold(conn)

        try:
            asyncio.run(run())
        except psycopg.OperationalError as exc:
            failures.append(exc)

    # Hold the park hour the fold writes last: it takes the keys, rewrites readings_1m and
    # the park minutes, then waits here, where it is killed.
    with psycopg.connect(db) as holder:
        holder.execute("SELECT * FROM park_1h WHERE park_id = 'p1' FOR UPDATE")
        thread = threading.Thread(target=folding)
        thread.start()

        def fold_waiting() -> list[tuple[Any, ...]]:
            with psycopg.connect(db, autocommit=True) as conn:
                return conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'fold-under-test'"
                    " AND wait_event_type = 'Lock'"
                ).fetchall()

        wait_until(fold_waiting, 30, message="the fold never reached the held park hour")
        [(pid,)] = fold_waiting()
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(timeout=30)
        holder.rollback()
    assert len(failures) == 1  # killed, not finished
    assert rollups(db) == before  # rolled back: nothing half-folded
    assert rows(db, "SELECT count(*) AS n FROM rollup_dirty")[0]["n"] == dirty  # keys kept

    fold_now(db)
    folded = rollups(db)
    assert folded != before
    assert folded == rebuilt(db)
    assert rows(db, "SELECT count(*) AS n FROM rollup_dirty") == [{"n": 0}]


def test_late_reading_between_stored_ones_is_aggregated_from_raw_rows(db: str) -> None:
    """A piece overlapping the stored minute in time makes the fold re-read that minute raw."""
    write_batches(db, [batch(0, 2)])
    on_time = rows(db, "SELECT count(*) AS n FROM readings_1m")[0]["n"]
    folds: list[FoldResult] = []
    # One late counter reading inside minute 1, between readings already folded.
    late = [reading("l1", "output_units", t(10, 1, 2.5), 0.0)]
    write_batches(db, [late, batch(2, 1)], fold_every=2, fold_at_end=False, folds=folds)
    [result] = folds
    assert result.recomputed == 1
    assert result.merged == on_time // 2  # minute 2: its four keys, merged from pieces
    assert rollups(db) == rebuilt(db)


def test_keys_logged_without_a_piece_are_aggregated_from_raw_rows(db: str) -> None:
    """A key logged before pieces existed (migration 0025) is folded from its raw readings."""
    write_batches(db, [batch(0, 1)])
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO readings (device_id, metric, ts, value, received_at)"
            " VALUES ('m1', 'energy_kwh', %s, 1000, now())",
            (t(10, 0, 59.5),),
        )
        conn.execute(
            "INSERT INTO rollup_dirty (device_id, metric, minute) VALUES ('m1', 'energy_kwh', %s)",
            (t(10, 0),),
        )
    result = fold_now(db)
    assert (result.merged, result.recomputed) == (0, 1)
    assert rollups(db) == rebuilt(db)


def test_the_fold_loop_vacuums_the_log_it_empties(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folded keys leave dead rows in rollup_dirty; the fold's own VACUUM clears them."""
    monkeypatch.setattr(jobs, "LOG_VACUUM_INTERVAL_S", 0.0)
    write_batches(db, [batch(0, 3), batch(3, 3)], fold_every=99, fold_at_end=False)
    before = rows(db, _VACUUMS)[0]["n"]

    def vacuumed() -> bool:
        return bool(rows(db, _VACUUMS)[0]["n"] > before)

    run_maintenance_until(db, vacuumed, 60, message="no VACUUM of the log", fold_interval_s=0.05)
    assert rows(db, "SELECT count(*) AS n FROM rollup_dirty") == [{"n": 0}]


def test_vacuuming_the_log_removes_the_rows_folds_deleted(db: str) -> None:
    """What a fold took is gone from the log's pages, not only from its visible rows."""
    write_batches(db, [batch(0, 3)])
    assert rows(db, _DEAD)[0]["n"] > 0

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await vacuum_log(conn)
            assert not conn.autocommit  # the mode it came in

    asyncio.run(run())
    assert rows(db, _DEAD) == [{"n": 0}]


_VACUUMS = "SELECT vacuum_count AS n FROM pg_stat_user_tables WHERE relname = 'rollup_dirty'"
_DEAD = "SELECT n_dead_tup AS n FROM pg_stat_user_tables WHERE relname = 'rollup_dirty'"
