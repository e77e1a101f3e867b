"""Tests of bench-peers against a real database: progress counters, exact counts, settings."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.stack.postgres import DEFAULT_SETTINGS
from services.stack.stack import Stack
from tests.harness.environment import TEST_CLUSTER_SETTINGS, free_port, make_temp_dir
from tests.harness.waiting import wait_until
from tools.bench_peers import (
    BENCH_POSTGRES_SETTINGS,
    BenchPeersError,
    Sampler,
    _final_counts,
    bench_connect,
    fresh_start,
    prepare_instrumentation,
    reset_statements,
)
from tools.peer_bridge import PEER_TABLE, create_table

T0 = datetime(2026, 1, 5, tzinfo=UTC)
METRICS = ("power_kw", "energy_kwh", "state", "temp_c", "output_units")


def _insert_messages(conninfo: str, device: str, count: int, *, start: int = 0) -> None:
    """Store ``count`` five-reading messages of ``device``, one a second, in one transaction."""
    rows = [
        (device, metric, T0 + timedelta(seconds=start + i), 1.0, T0)
        for i in range(count)
        for metric in METRICS
    ]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY readings (device_id, metric, ts, value, received_at) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        # The statistics system takes a backend's counts at most once a second; now.
        conn.execute("SELECT pg_stat_force_next_flush()")


def test_progress_counts_rows_inserted_into_every_chunk_as_messages(clean_db: str) -> None:
    """The sampler's samples grow by the messages stored, over chunks of several days."""
    sampler = Sampler(clean_db, "parksense", t0=0.0)
    sampler.start()
    try:
        _insert_messages(clean_db, "bench-d1", 10)
        _insert_messages(clean_db, "bench-d1", 3, start=3 * 86_400)  # another chunk
        wait_until(lambda: sampler.samples and sampler.samples[-1].messages == 13, 10.0)
    finally:
        sampler.close()


def test_a_fresh_start_leaves_nothing_an_earlier_invocation_derived(clean_db: str) -> None:
    """Raw rows, roll-ups, latest values and the dirty-key log all go (not only raw rows)."""
    _insert_messages(clean_db, "bench-d1", 5)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_latest (device_id, metric, ts, value, received_at)"
            " SELECT device_id, metric, max(ts), 1.0, max(ts) FROM readings GROUP BY 1, 2"
        )
        conn.execute(
            "INSERT INTO rollup_dirty (device_id, metric, minute)"
            " SELECT DISTINCT device_id, metric, date_trunc('minute', ts) FROM readings"
        )
        conn.execute(
            "INSERT INTO readings_15m (device_id, metric, quarter, n, first_ts, last_ts)"
            " SELECT device_id, metric, date_trunc('hour', ts), 1, min(ts), max(ts)"
            " FROM readings GROUP BY 1, 2, 3"
        )
        fresh_start(conn)
        left = conn.execute(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM device_latest)"
            " + (SELECT count(*) FROM rollup_dirty) + (SELECT count(*) FROM readings_15m)"
        ).fetchone()
    assert left == (0,)


def test_final_counts_are_distinct_messages_and_every_row(clean_db: str) -> None:
    """The exact count takes each (device, ts) once and every stored row."""
    _insert_messages(clean_db, "bench-d1", 4)
    _insert_messages(clean_db, "bench-d2", 2)
    _insert_messages(clean_db, "other-d3", 7)
    params = (T0, T0 + timedelta(days=1), "bench-%")
    with psycopg.connect(clean_db, autocommit=True) as conn:
        landed = _final_counts(conn, "parksense", params, with_commit=False)
    assert (landed.messages, landed.rows, landed.last_commit_ts) == (6, 30, None)


def test_a_cluster_without_commit_timestamps_is_refused(clean_db: str) -> None:
    """The test cluster runs without the bench's settings: the bench says it cannot measure."""
    with (
        psycopg.connect(clean_db, autocommit=True) as conn,
        pytest.raises(BenchPeersError, match="track_commit_timestamp"),
    ):
        prepare_instrumentation(conn)


@pytest.fixture(scope="module")
def bench_cluster() -> Iterator[Stack]:
    """The cluster of a stack made as bench-peers makes it (its settings over the defaults)."""
    base = make_temp_dir("parksense-test-bench-peers-")
    stack = Stack(
        StackSettings(state_dir=base / "state", ingest_metrics_base_port=free_port()),
        DatabaseSettings(port=free_port()),
        MqttSettings(port=free_port()),
        ApiSettings(port=free_port()),
        postgres_settings={**TEST_CLUSTER_SETTINGS, **BENCH_POSTGRES_SETTINGS},
    )
    try:
        stack.postgres.start()
        with psycopg.connect(stack.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield stack
    finally:
        stack.postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_bench_settings_go_over_the_defaults_for_the_bench_only(bench_cluster: Stack) -> None:
    """The bench's cluster preloads pg_stat_statements; the product's defaults stay as they were."""
    settings = bench_cluster.postgres.settings
    assert settings["shared_preload_libraries"] == "timescaledb,pg_stat_statements"
    assert settings["track_commit_timestamp"] == "on"
    assert DEFAULT_SETTINGS["shared_preload_libraries"] == "timescaledb"
    assert "track_commit_timestamp" not in DEFAULT_SETTINGS


def test_last_landed_is_the_commit_time_of_the_last_row(bench_cluster: Stack) -> None:
    """With the bench's settings the exact count also gives the last row's wall-clock commit."""
    conninfo = bench_cluster.postgres.conninfo()
    with bench_connect(conninfo) as conn:
        prepare_instrumentation(conn)
        create_table(conn)
        reset_statements(conn)
        before = time.time()
        for seq in range(3):
            conn.execute(
                f"INSERT INTO {PEER_TABLE} (ts, topic, seq) VALUES (%s, 't/1', %s)",
                (T0 + timedelta(seconds=seq), seq),
            )
        conn.execute(f"INSERT INTO {PEER_TABLE} (ts, topic, seq) VALUES (%s, 't/1', 2)", (T0,))
        after = time.time()
        landed = _final_counts(conn, "peer", (T0, T0 + timedelta(days=1)))
        calls = conn.execute(
            "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE 'INSERT INTO peer%%'"
        ).fetchone()
    assert (landed.messages, landed.rows) == (3, 4)
    assert landed.last_commit_ts is not None
    assert before <= landed.last_commit_ts.timestamp() <= after
    assert calls == (4,)
