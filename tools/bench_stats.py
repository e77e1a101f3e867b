"""Pure helpers of the benchmark: Prometheus histogram quantiles and the report's rendering."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Cumulative bucket counts of a histogram: upper bound ``le`` → observations at or below it.
Buckets = dict[float, float]


def parse_histogram(text: str, name: str) -> Buckets:
    """Return the cumulative buckets of histogram ``name`` in a Prometheus text exposition.

    Buckets of the same bound with different labels (other than ``le``) are added up.
    """
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
    return buckets


def add_buckets(parts: Iterable[Buckets]) -> Buckets:
    """Add the cumulative buckets of several workers' histograms."""
    total: Buckets = {}
    for buckets in parts:
        for bound, count in buckets.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def subtract_buckets(after: Buckets, before: Buckets) -> Buckets:
    """Return the observations made between two scrapes (a worker restart counts from zero)."""
    return {bound: max(0.0, count - before.get(bound, 0.0)) for bound, count in after.items()}


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Estimate quantile ``q`` from cumulative buckets, as Prometheus' histogram_quantile does.

    The observation of rank ``q * count`` is placed by linear interpolation inside its bucket
    (the first bucket starts at 0). A rank in the ``+Inf`` bucket returns the largest finite
    bound, which is then only a lower limit.

    Returns:
        The estimate in the histogram's unit, or None when the histogram has no observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower  # pragma: no cover - the +Inf bucket holds every observation


@dataclass(slots=True)
class BenchReport:
    """Everything the benchmark measured, in units named by the field."""

    devices: int
    connections: int
    samples_per_message: int
    metrics_per_sample: int
    duration_s: float
    target_rate_msg_s: float | None
    messages_published: int
    messages_acked: int
    readings_published: int
    publish_rate_msg_s: float
    publish_only: bool = False
    readings_stored: int = 0
    readings_refused: int = 0
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    drain_s: float | None = None
    stored_readings_s: float | None = None
    landed_span_s: float | None = None
    landed_readings_s: float | None = None
    landed_messages_s: float | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_source: str = ""
    latency_observations: int = 0
    settled: bool = False
    ingest_workers: int = 0
    ingest_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain data, for ``--json``."""
        return asdict(self)


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.1f} ms"


def render_markdown(report: BenchReport) -> str:
    """Render the report as markdown tables that can be pasted into docs/benchmarks.md."""
    rss = ", ".join(f"{k}: {v:,.0f} MiB" for k, v in report.ingest_peak_rss_mib.items())
    rate = "max" if report.target_rate_msg_s is None else f"{report.target_rate_msg_s:,.0f} msg/s"
    per_message = report.samples_per_message * report.metrics_per_sample
    rows: list[tuple[str, str]] = [
        ("devices / publisher connections", f"{report.devices:,} / {report.connections}"),
        (
            "message shape",
            (
                f"{report.samples_per_message} samples x {report.metrics_per_sample} metrics"
                f" = {per_message} readings"
            ),
        ),
        ("publish duration / target rate", f"{report.duration_s:g} s / {rate}"),
        (
            "published (PUBACKed)",
            (
                f"{report.messages_acked:,} messages, {report.readings_published:,} readings"
                f" ({_fmt(report.publish_rate_msg_s)} msg/s)"
            ),
        ),
        (
            "stored / refused",
            f"{report.readings_stored:,} / {report.readings_refused:,} readings"
            + ("" if report.settled else " (database still growing at the deadline)"),
        ),
        (
            "landed readings/s, messages/s (first to last received_at)",
            f"{_fmt(report.landed_readings_s)}, {_fmt(report.landed_messages_s)}",
        ),
        (
            "stored readings/s (first publish to last row visible)",
            f"{_fmt(report.stored_readings_s)} (all stored after {_fmt(report.drain_s, 1)} s)",
        ),
        (
            "latency publish → commit p50 / p99",
            f"{_ms(report.latency_p50_s)} / {_ms(report.latency_p99_s)} ({report.latency_source})",
        ),
        ("ingest workers / peak RSS", f"{report.ingest_workers} / {rss or 'n/a'}"),
    ]
    if report.publish_only:
        rows = rows[:4]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "| machine | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in report.machine.items()]
    if report.notes:
        lines += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


def quantiles_from_scrapes(
    before: Mapping[str, Buckets], after: Mapping[str, Buckets]
) -> tuple[float | None, float | None, int]:
    """Return p50, p99 and the observation count between two scrapes of several workers."""
    delta = add_buckets(subtract_buckets(after[w], before.get(w, {})) for w in after)
    count = int(max(delta.values(), default=0.0))
    return histogram_quantile(0.5, delta), histogram_quantile(0.99, delta), count
