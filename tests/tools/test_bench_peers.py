"""Tests of bench-peers against a real database: progress counters, exact counts, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.harness.waiting import wait_until
from tools.bench_peers import (
    BenchPeersError,
    Sampler,
    _final_counts,
    prepare_instrumentation,
)

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
