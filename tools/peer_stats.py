"""Figures of ``parksense bench-peers``: one run's result, medians, and the printed table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

READINGS_PER_MESSAGE = 5


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
        rows_per_message = READINGS_PER_MESSAGE if self.design == "parksense" else 1
        return max(self.stored_rows - self.landed * rows_per_message, 0)

    @property
    def cpu_us_per_reading(self) -> float | None:
        """Machine CPU (every measured process) per stored reading, in microseconds."""
        if not self.landed or not self.cpu_s:
            return None
        return sum(self.cpu_s.values()) / (self.landed * READINGS_PER_MESSAGE) * 1e6


def median(values: list[float | None]) -> float | None:
    """Return the median of the values that are known (None when none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


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
    )


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_runs(results: list[RunResult]) -> str:
    """Return every run as a markdown table, in the order they ran."""
    lines = [
        (
            "| run | design | acked | landed | span s | landed msg/s | lost | doubled "
            "| CPU µs/reading | peak RSS MiB | publisher busy |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.run} | {r.design} | {r.acked:,} | {r.landed:,} | {_num(r.span_s, '.1f')} "
        f"| {_num(r.landed_msg_s, ',.0f')} | {r.lost:,} | {r.doubled:,} "
        f"| {_num(r.cpu_us_per_reading, '.1f')} | {_num(r.peak_rss_mib, '.0f')} "
        f"| {_num(r.publisher_cpu_s / r.publish_s if r.publish_s else None, '.0%')} of a core |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def render_summary(ours: DesignSummary, peer: DesignSummary) -> str:
    """Return the side-by-side table of medians, with the ratio parksense ÷ peer."""
    ratio = (
        ours.landed_msg_s / peer.landed_msg_s
        if ours.landed_msg_s is not None and peer.landed_msg_s
        else None
    )

    def cpu_detail(summary: DesignSummary) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in summary.cpu_us_by_process.items()) or "n/a"

    rows = [
        ("runs", str(ours.runs), str(peer.runs)),
        (
            "landed msg/s (median)",
            _num(ours.landed_msg_s, ",.0f"),
            _num(peer.landed_msg_s, ",.0f"),
        ),
        (
            "landed readings/s (median)",
            _num(None if ours.landed_msg_s is None else ours.landed_msg_s * 5, ",.0f"),
            _num(None if peer.landed_msg_s is None else peer.landed_msg_s * 5, ",.0f"),
        ),
        ("lost (all runs)", f"{ours.lost:,}", f"{peer.lost:,}"),
        ("doubled (all runs)", f"{ours.doubled:,}", f"{peer.doubled:,}"),
        (
            "machine CPU µs per stored reading (median)",
            _num(ours.cpu_us_per_reading, ".1f"),
            _num(peer.cpu_us_per_reading, ".1f"),
        ),
        ("… of which, µs", cpu_detail(ours), cpu_detail(peer)),
        (
            "ingest peak RSS MiB (max)",
            _num(ours.peak_rss_mib, ".0f"),
            _num(peer.peak_rss_mib, ".0f"),
        ),
    ]
    lines = ["| | parksense | peer (mq-bridge) |", "|---|---|---|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    lines.append(f"\n**ratio parksense / peer: {_num(ratio, '.2f')}x**")
    return "\n".join(lines) + "\n"
