"""Tests of the figures of bench-peers: landed rate, medians, lost and doubled, the table."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tools.peer_stats import (
    BENCH_TAG,
    LatencyResult,
    RunResult,
    Sample,
    StatementCost,
    group_statements,
    histogram_quantile,
    landed_span_s,
    last_growth_s,
    median,
    median_run,
    render_latency,
    render_runs,
    render_statements,
    render_summary,
    summarise,
)


def _result(design: str, run: int, landed: int, span_s: float, **kwargs: object) -> RunResult:
    defaults: dict[str, object] = {
        "published": 1000,
        "acked": 1000,
        "stored_rows": landed * (5 if design == "parksense" else 1),
        "cpu_s": {"broker": 0.1, "consumer": 0.2, "postgres": 0.2},
    }
    defaults.update(kwargs)
    return RunResult(design=design, run=run, landed=landed, span_s=span_s, **defaults)  # type: ignore[arg-type]


def test_last_growth_is_the_first_sample_that_saw_the_final_count():
    """The span ends at the first poll that saw the final count, not at the last poll."""
    samples = [Sample(0.0, 0), Sample(1.0, 400), Sample(2.0, 1000), Sample(3.0, 1000)]
    assert last_growth_s(samples) == 2.0


def test_last_growth_is_unknown_when_nothing_landed():
    """Without a landed message there is no span."""
    assert last_growth_s([]) is None
    assert last_growth_s([Sample(0.0, 0), Sample(1.0, 0)]) is None


def test_landed_rate_is_landed_over_span():
    """The figure is distinct messages landed over seconds to the last landed row."""
    assert _result("peer", 1, 1000, 4.0).landed_msg_s == 250.0
    assert _result("peer", 1, 1000, 0.0).landed_msg_s is None


def test_lost_is_acked_minus_landed():
    """Acknowledged messages that never landed are lost."""
    assert _result("parksense", 1, 990, 1.0).lost == 10
    assert _result("parksense", 1, 1000, 1.0).lost == 0


@pytest.mark.parametrize(("design", "rows", "doubled"), [("parksense", 5005, 5), ("peer", 1003, 3)])
def test_doubled_counts_rows_beyond_one_per_reading_or_message(design, rows, doubled):
    """A parksense message is five rows, a peer message one; anything more is doubled."""
    assert _result(design, 1, 1000, 1.0, stored_rows=rows).doubled == doubled


def test_cpu_per_reading_divides_by_five_readings_a_message():
    """CPU per stored reading counts five readings in every landed message."""
    result = _result("peer", 1, 1000, 1.0, cpu_s={"broker": 0.01, "postgres": 0.04})
    assert result.cpu_us_per_reading == pytest.approx(10.0)


def test_median_ignores_unknown_values():
    """Unknown figures do not count towards the median."""
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None


def test_summary_takes_medians_and_totals_lost_and_doubled():
    """Each design's summary holds its median rate and its total lost and doubled."""
    results = [
        _result("parksense", 1, 1000, 2.0),
        _result("peer", 1, 1000, 1.0),
        _result("parksense", 2, 999, 1.0, stored_rows=5000),
        _result("peer", 2, 1000, 4.0),
        _result("parksense", 3, 1000, 4.0),
        _result("peer", 3, 1000, 2.0),
    ]
    ours, peer = summarise(results, "parksense"), summarise(results, "peer")
    assert ours.landed_msg_s == 500.0
    assert peer.landed_msg_s == 500.0
    assert ours.lost == 1
    assert ours.doubled == 5
    assert peer.runs == 3
    assert "parksense 1.00x" in render_summary([ours, peer])


def test_summary_shows_lag_memory_batches_and_waits_on_another_worker():
    """Roll-up lag, RSS start → end, rows per batch and waits on another worker reach the table."""
    two = _result(
        "parksense-2w",
        1,
        1000,
        1.0,
        rss_start_mib=40.0,
        rss_end_mib=42.0,
        rollup_lag_s=[0.5, 1.0, 3.0],
        waits=Counter({"CPU:-": 7, "Lock:transactionid": 1}),
        wait_samples=5,
        waits_on_other_worker=1,
        waits_on_own_writer=2,
        other_worker_extending=1,
        rows_per_batch=1234.4,
    )
    table = render_summary([summarise([two], "parksense-2w"), summarise([two], "peer")])
    assert "| 40 → 42 |" in table
    assert "| ingest rows per committed batch (median) | 1,234 |" in table
    assert "| 1.0 / 3.0 |" in table
    assert (
        "5 samples; waiting on another worker 1 (for its rows or transaction 0, extending"
        " the same table or index 1), on the worker's other writer 2;"
        " CPU:- 7, Lock:transactionid 1"
    ) in table
    assert "parksense-2w n/ax" in table  # no peer run: no ratio


def test_histogram_quantile_reads_the_bucket_of_the_rank_between_two_scrapes():
    """The quantile is the bound of the first bucket whose new count reaches the rank."""
    before = {0.1: 10.0, 0.5: 10.0, 1.0: 10.0, math.inf: 10.0}
    after = {0.1: 60.0, 0.5: 108.0, 1.0: 109.0, math.inf: 110.0}
    assert histogram_quantile(before, after, 0.5) == 0.1
    assert histogram_quantile(before, after, 0.98) == 0.5
    assert histogram_quantile(before, after, 0.99) == 1.0
    assert histogram_quantile(after, after, 0.99) is None


def test_latency_table_has_one_row_per_paced_run():
    """Each paced run shows its rate and its quantiles as bucket bounds."""
    table = render_latency([LatencyResult("parksense", 500.0, 15000, 15000, 0.3, 0.75)])
    assert "| parksense | 500 | 15,000 | 15,000 | ≤ 0.3 s | ≤ 0.75 s |" in table


def test_run_table_lists_every_run_in_order():
    """The run table has a header, a separator and one row per run."""
    table = render_runs([_result("parksense", 1, 1000, 2.0), _result("peer", 1, 1000, 1.0)])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert "| 1 | parksense |" in lines[2]
    assert "| 1 | peer |" in lines[3]


def test_wal_per_reading_and_checkpoints_reach_both_tables():
    """WAL bytes are divided by the stored readings; a run's checkpoints are listed."""
    run = _result("parksense", 1, 1000, 2.0, wal_bytes=1_500_000.0, checkpoints=1)
    assert run.wal_bytes_per_reading == pytest.approx(300.0)  # 1,000 messages x 5
    assert "| 300 | 1 |" in render_runs([run])
    summary = summarise([run], "parksense")
    assert "| WAL bytes per stored reading (median) | 300 |" in render_summary([summary])
    unmeasured = _result("peer", 1, 1000, 2.0)
    assert unmeasured.wal_bytes_per_reading is None
    assert "| n/a | n/a |" in render_runs([unmeasured])


def test_span_runs_from_the_first_publish_to_the_last_commit_on_the_wall_clock():
    """The span is the last landed row's commit time minus the first publish, both wall clock."""
    first_publish = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    last_commit = datetime(2026, 12, 1, 12, 0, 12, 500_000, tzinfo=UTC)
    assert landed_span_s(first_publish, last_commit) == pytest.approx(12.5)
    assert landed_span_s(first_publish, None) is None


def test_span_compares_instants_whatever_the_commit_timestamps_zone():
    """A commit timestamp in another zone is the same instant."""
    first_publish = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    cet = timezone(timedelta(hours=1))
    assert landed_span_s(first_publish, datetime(2026, 12, 1, 13, 0, 3, tzinfo=cet)) == 3.0


def test_median_run_is_the_run_of_the_median_rate_of_its_design():
    """The median run is the middle one by landed rate; of two middles, the slower."""
    results = [
        _result("parksense", 1, 1000, 2.0),
        _result("parksense", 2, 1000, 1.0),
        _result("parksense", 3, 1000, 4.0),
        _result("peer", 1, 1000, 1.0),
        _result("peer", 2, 1000, 2.0),
    ]
    assert median_run(results, "parksense").run == 1  # type: ignore[union-attr]
    assert median_run(results, "peer").run == 2  # type: ignore[union-attr]
    assert median_run(results, "parksense-2w") is None


def test_statements_table_shows_time_per_stored_reading_and_lists_the_bench_apart():
    """A statement shows calls, total time, µs per stored reading and rows; the bench's below."""
    run = _result(
        "parksense",
        1,
        1000,
        1.0,
        statements=[
            StatementCost("INSERT INTO readings\n    SELECT $1", 40, 25.0, 5000),
            StatementCost("SELECT a FROM x WHERE a | b", 2, 5.0, 2),
            StatementCost(f"{BENCH_TAG} SELECT count(*) FROM y", 3, 0.5, 3),
        ],
    )
    table = render_statements(run)
    assert "top 12 by total time of 30 ms in all" in table
    assert "| `INSERT INTO readings SELECT $1` | 40 | 25.0 | 5.00 | 5,000 |" in table
    assert "| `SELECT a FROM x WHERE a \\| b` | 2 | 5.0 | 1.00 | 2 |" in table
    assert "count(*) FROM y` |" not in table
    assert "The bench's own: `SELECT count(*) FROM y` 3 calls, 0.5 ms." in table


def test_statements_of_the_same_text_add_up_across_sessions():
    """Entries of one text (a temporary table per session) become one line, largest first."""
    grouped = group_statements(
        [
            StatementCost("COPY staging  FROM STDIN", 10, 4.0, 100),
            StatementCost("SELECT 1", 1, 5.0, 1),
            StatementCost("COPY staging\nFROM STDIN", 5, 3.0, 50),
        ]
    )
    assert grouped == [
        StatementCost("COPY staging FROM STDIN", 15, 7.0, 150),
        StatementCost("SELECT 1", 1, 5.0, 1),
    ]


def test_statements_table_cuts_long_statements_at_a_word_and_keeps_the_top():
    """A long statement is cut at a word; only the top statements are listed."""
    long = "SELECT " + ", ".join(f"column_{i}" for i in range(40)) + " FROM readings"
    costs = [StatementCost(long, 1, 10.0 - i, 1) for i in range(5)]
    run = _result("peer", 1, 1000, 1.0, statements=costs)
    rows = [line for line in render_statements(run, top=2).splitlines() if "column_0" in line]
    assert len(rows) == 2
    assert " …` |" in rows[0]
    assert "FROM readings" not in rows[0]


def test_statements_table_says_when_nothing_was_recorded():
    """A run without statements (the extension off) says so instead of an empty table."""
    assert "(none recorded)" in render_statements(_result("peer", 1, 1000, 1.0))
