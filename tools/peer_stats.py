"""Figures of ``parksense bench-peers``: one run's result, medians, and the printed table."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

READINGS_PER_MESSAGE = 5
PEER = "peer"
# The bench's own statements carry this comment, so the statements table can tell them apart.
BENCH_TAG = "/* bench-peers */"
# Characters of a statement's text the table shows (the rest is cut at a word).
STATEMENT_CHARS = 80


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of the database: seconds since the first publish, and messages seen."""

    at_s: float
    messages: int


def last_growth_s(samples: list[Sample]) -> float | None:
    """Return the time of the first sample that saw the final count (None when nothing landed)."""
    if not samples or samples[-1].messages == 0:
        return None
    final = samples[-1].messages
    return next(s.at_s for s in samples if s.messages == final)


def landed_span_s(first_publish_wall_s: float, last_commit_ts: datetime | None) -> float | None:
    """Return the seconds from the first publish to the commit of the last landed row.

    Both are wall-clock times of this machine: the publisher's ``time.time()`` when it
    wrote its first PUBLISH, and ``max(pg_xact_commit_timestamp(xmin))`` over the run's
    rows (an aware timestamp). None when nothing landed.
    """
    if last_commit_ts is None:
        return None
    return last_commit_ts.timestamp() - first_publish_wall_s


@dataclass(frozen=True, slots=True)
class StatementCost:
    """One line of ``pg_stat_statements`` over a run: its text, calls and time."""

    query: str
    calls: int
    total_ms: float
    rows: int

    @property
    def by_bench(self) -> bool:
        """Whether the benchmark itself ran it (its sampler or its landed checks)."""
        return BENCH_TAG in self.query


@dataclass(slots=True)
class RunResult:
    """What one run of one design measured."""

    design: str
    run: int
    published: int
    acked: int
    landed: int
    stored_rows: int
    span_s: float | None
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    publisher_cpu_s: float = 0.0
    publish_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    # parksense only: consumers' resident memory when the run started and ended (MiB),
    # the roll-up lag sampled once a second (age of the oldest unfolded commit, s), and
    # the ingest backends' pg_stat_activity wait events sampled with it.
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None
    rollup_lag_s: list[float] = field(default_factory=list)
    waits: Counter[str] = field(default_factory=Counter)
    wait_samples: int = 0
    waits_on_other_worker: int = 0
    waits_on_own_writer: int = 0  # on another connection of the same worker
    other_worker_extending: int = 0  # of the waits on another worker: relation extension
    rows_per_batch: float | None = None  # mean over the run's committed batches
    # WAL the cluster wrote during the run (bytes), and checkpoints begun in it.
    wal_bytes: float | None = None
    checkpoints: int | None = None
    # pg_stat_statements over the run (reset when it started), by total time, largest first.
    statements: list[StatementCost] = field(default_factory=list)

    @property
    def landed_msg_s(self) -> float | None:
        """Distinct messages landed ÷ seconds from first publish to last landed row."""
        if self.span_s is None or self.span_s <= 0:
            return None
        return self.landed / self.span_s

    @property
    def lost(self) -> int:
        """Messages the broker acknowledged that never landed."""
        return max(self.acked - self.landed, 0)

    @property
    def doubled(self) -> int:
        """Rows stored beyond one per reading (parksense) or one per message (peer)."""
        rows_per_message = 1 if self.design == PEER else READINGS_PER_MESSAGE
        return max(self.stored_rows - self.landed * rows_per_message, 0)

    @property
    def cpu_us_per_reading(self) -> float | None:
        """Machine CPU (every measured process) per stored reading, in microseconds."""
        if not self.landed or not self.cpu_s:
            return None
        return sum(self.cpu_s.values()) / (self.landed * READINGS_PER_MESSAGE) * 1e6

    @property
    def wal_bytes_per_reading(self) -> float | None:
        """WAL written during the run per stored reading (every session's, in bytes)."""
        if not self.landed or self.wal_bytes is None:
            return None
        return self.wal_bytes / (self.landed * READINGS_PER_MESSAGE)


def median_run(results: list[RunResult], design: str) -> RunResult | None:
    """Return the run of ``design`` with the median landed rate (the lower one of two middles)."""
    runs = sorted(
        (r for r in results if r.design == design and r.landed_msg_s is not None),
        key=lambda r: r.landed_msg_s or 0.0,
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def _one_line(query: str) -> str:
    return re.sub(r"\s+", " ", query).strip()


def group_statements(costs: list[StatementCost]) -> list[StatementCost]:
    """Add up entries of the same text, largest total time first.

    pg_stat_statements keys a statement by the OIDs it touches, so a statement on a
    temporary table (ingest's staging tables) gets one entry per session.
    """
    groups: dict[str, StatementCost] = {}
    for cost in costs:
        key = _one_line(cost.query)
        seen = groups.get(key, StatementCost(key, 0, 0.0, 0))
        groups[key] = StatementCost(
            key, seen.calls + cost.calls, seen.total_ms + cost.total_ms, seen.rows + cost.rows
        )
    return sorted(groups.values(), key=lambda c: c.total_ms, reverse=True)


def _statement_text(query: str) -> str:
    text = _one_line(query.replace(BENCH_TAG, ""))
    if len(text) > STATEMENT_CHARS:
        text = text[:STATEMENT_CHARS].rsplit(" ", 1)[0] + " …"
    return text.replace("|", "\\|")


def render_statements(run: RunResult, top: int = 12) -> str:
    """Return where PostgreSQL's time went in ``run``: its top statements as a markdown table.

    µs per stored reading divides a statement's total execution time by the run's landed
    messages x five readings, as the CPU figure does. The bench's own statements (left out
    of the CPU figure) are not in the table but listed under it.
    """
    readings = run.landed * READINGS_PER_MESSAGE
    measured = [c for c in run.statements if not c.by_bench]
    total_ms = sum(c.total_ms for c in measured)
    lines = [
        (
            f"Statements of run {run.run} {run.design} (pg_stat_statements, top {top} by total"
            f" time of {total_ms:,.0f} ms in all):"
        ),
        "",
        "| statement | calls | total ms | µs/reading | rows |",
        "|---|---|---|---|---|",
    ]
    for cost in measured[:top]:
        per_reading = cost.total_ms * 1000 / readings if readings else None
        lines.append(
            f"| `{_statement_text(cost.query)}` | {cost.calls:,} | {cost.total_ms:,.1f} "
            f"| {_num(per_reading, '.2f')} | {cost.rows:,} |"
        )
    if not measured:
        lines.append("| (none recorded) | | | | |")
    own = [
        f"`{_statement_text(c.query)}` {c.calls:,} call{'' if c.calls == 1 else 's'},"
        f" {c.total_ms:,.1f} ms"
        for c in run.statements
        if c.by_bench
    ]
    if own:
        lines += ["", "The bench's own: " + "; ".join(own) + "."]
    return "\n".join(lines) + "\n"


def median(values: list[float | None]) -> float | None:
    """Return the median of the values that are known (None when none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """Return the upper bound of the bucket holding quantile ``q`` of what was observed between.

    ``before`` and ``after`` map a Prometheus histogram's bucket bounds (``le``, with
    ``math.inf``) to cumulative counts; None when nothing was observed in between.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= rank)


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """A paced run of one design: publish → commit at a fixed rate."""

    design: str
    rate_msg_s: float
    messages: int
    landed: int
    p50_s: float | None
    p99_s: float | None


def render_latency(results: list[LatencyResult]) -> str:
    """Return the paced runs as a markdown table (quantiles are histogram bucket bounds)."""
    lines = [
        "| design | rate msg/s | messages | landed | publish → commit p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.design} | {r.rate_msg_s:,.0f} | {r.messages:,} | {r.landed:,} "
        f"| ≤ {_num(r.p50_s, 'g')} s | ≤ {_num(r.p99_s, 'g')} s |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class DesignSummary:
    """Medians of one design over its runs."""

    design: str
    runs: int
    landed_msg_s: float | None
    lost: int
    doubled: int
    cpu_us_per_reading: float | None
    cpu_us_by_process: dict[str, float]
    peak_rss_mib: float | None
    rss_start_end_mib: tuple[float, float] | None = None  # of the last run
    rollup_lag_p50_s: float | None = None
    rollup_lag_max_s: float | None = None
    waits: Counter[str] = field(default_factory=Counter)
    wait_samples: int = 0
    waits_on_other_worker: int = 0
    waits_on_own_writer: int = 0  # on another connection of the same worker
    other_worker_extending: int = 0  # of the waits on another worker: relation extension
    rows_per_batch: float | None = None
    wal_bytes_per_reading: float | None = None


def summarise(results: list[RunResult], design: str) -> DesignSummary:
    """Return the medians of ``design``'s runs (lost and doubled are totals over the runs)."""
    runs = [r for r in results if r.design == design]
    processes = sorted({name for r in runs for name in r.cpu_s})
    by_process: dict[str, float] = {}
    for name in processes:
        value = median(
            [r.cpu_s[name] / (r.landed * READINGS_PER_MESSAGE) * 1e6 for r in runs if r.landed]
        )
        if value is not None:
            by_process[name] = value
    return DesignSummary(
        design=design,
        runs=len(runs),
        landed_msg_s=median([r.landed_msg_s for r in runs]),
        lost=sum(r.lost for r in runs),
        doubled=sum(r.doubled for r in runs),
        cpu_us_per_reading=median([r.cpu_us_per_reading for r in runs]),
        cpu_us_by_process=by_process,
        peak_rss_mib=max(
            (r.peak_rss_mib for r in runs if r.peak_rss_mib is not None), default=None
        ),
        rss_start_end_mib=next(
            (
                (r.rss_start_mib, r.rss_end_mib)
                for r in reversed(runs)
                if r.rss_start_mib is not None and r.rss_end_mib is not None
            ),
            None,
        ),
        rollup_lag_p50_s=median([v for r in runs for v in r.rollup_lag_s]),
        rollup_lag_max_s=max((v for r in runs for v in r.rollup_lag_s), default=None),
        waits=sum((r.waits for r in runs), Counter()),
        wait_samples=sum(r.wait_samples for r in runs),
        waits_on_other_worker=sum(r.waits_on_other_worker for r in runs),
        waits_on_own_writer=sum(r.waits_on_own_writer for r in runs),
        other_worker_extending=sum(r.other_worker_extending for r in runs),
        rows_per_batch=median([r.rows_per_batch for r in runs]),
        wal_bytes_per_reading=median([r.wal_bytes_per_reading for r in runs]),
    )


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_runs(results: list[RunResult]) -> str:
    """Return every run as a markdown table, in the order they ran."""
    lines = [
        (
            "| run | design | acked | landed | span s | landed msg/s | lost | doubled "
            "| CPU µs/reading | WAL B/reading | checkpoints | peak RSS MiB | publisher busy |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.run} | {r.design} | {r.acked:,} | {r.landed:,} | {_num(r.span_s, '.1f')} "
        f"| {_num(r.landed_msg_s, ',.0f')} | {r.lost:,} | {r.doubled:,} "
        f"| {_num(r.cpu_us_per_reading, '.1f')} | {_num(r.wal_bytes_per_reading, ',.0f')} "
        f"| {'n/a' if r.checkpoints is None else r.checkpoints} | {_num(r.peak_rss_mib, '.0f')} "
        f"| {_num(r.publisher_cpu_s / r.publish_s if r.publish_s else None, '.0%')} of a core |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def _waits(summary: DesignSummary) -> str:
    if not summary.wait_samples:
        return "n/a"
    top = ", ".join(f"{k} {v}" for k, v in summary.waits.most_common(4))
    return (
        f"{summary.wait_samples} samples; waiting on another worker "
        f"{summary.waits_on_other_worker} (for its rows or transaction "
        f"{summary.waits_on_other_worker - summary.other_worker_extending}, extending the "
        f"same table or index {summary.other_worker_extending}), on the worker's other "
        f"writer {summary.waits_on_own_writer}; {top or 'none active'}"
    )


def render_summary(summaries: list[DesignSummary]) -> str:
    """Return the side-by-side table of medians, with each design's ratio to the peer."""
    peer = next((s for s in summaries if s.design == PEER), None)

    def ratio(summary: DesignSummary) -> float | None:
        if peer is None or summary.landed_msg_s is None or not peer.landed_msg_s:
            return None
        return summary.landed_msg_s / peer.landed_msg_s

    def cpu_detail(summary: DesignSummary) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in summary.cpu_us_by_process.items()) or "n/a"

    def rss(summary: DesignSummary) -> str:
        if summary.rss_start_end_mib is None:
            return "n/a"
        start, end = summary.rss_start_end_mib
        return f"{start:.0f} → {end:.0f}"

    def lag(summary: DesignSummary) -> str:
        if summary.rollup_lag_p50_s is None:
            return "n/a"
        return f"{summary.rollup_lag_p50_s:.1f} / {_num(summary.rollup_lag_max_s, '.1f')}"

    def readings(summary: DesignSummary) -> str:
        value = summary.landed_msg_s
        return _num(None if value is None else value * READINGS_PER_MESSAGE, ",.0f")

    rows = [
        ("runs", [str(s.runs) for s in summaries]),
        ("landed msg/s (median)", [_num(s.landed_msg_s, ",.0f") for s in summaries]),
        ("landed readings/s (median)", [readings(s) for s in summaries]),
        ("ratio to the peer", [_num(ratio(s), ".2f") + "x" for s in summaries]),
        ("lost (all runs)", [f"{s.lost:,}" for s in summaries]),
        ("doubled (all runs)", [f"{s.doubled:,}" for s in summaries]),
        (
            "machine CPU µs per stored reading (median)",
            [_num(s.cpu_us_per_reading, ".1f") for s in summaries],
        ),
        ("… of which, µs", [cpu_detail(s) for s in summaries]),
        (
            "WAL bytes per stored reading (median)",
            [_num(s.wal_bytes_per_reading, ",.0f") for s in summaries],
        ),
        (
            "ingest rows per committed batch (median)",
            [_num(s.rows_per_batch, ",.0f") for s in summaries],
        ),
        ("consumer peak RSS MiB (max)", [_num(s.peak_rss_mib, ".0f") for s in summaries]),
        ("consumer RSS MiB, start → end (all workers, last run)", [rss(s) for s in summaries]),
        ("roll-up lag after commit s, p50 / max (1 s samples)", [lag(s) for s in summaries]),
        ("ingest wait events (pg_stat_activity, 1 s samples)", [_waits(s) for s in summaries]),
    ]
    lines = [
        "| | " + " | ".join(s.design for s in summaries) + " |",
        "|---|" + "---|" * len(summaries),
    ]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    headline = ", ".join(
        f"{s.design} {_num(ratio(s), '.2f')}x" for s in summaries if s.design != PEER
    )
    lines.append(f"\n**ratio to the peer: {headline}**")
    return "\n".join(lines) + "\n"
