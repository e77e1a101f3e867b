"""Counter increases over a time window, by PRODUCT.md's rule (a drop means a restart from 0)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One reading of a counter: its measured time and value."""

    ts: datetime
    value: float


def step(previous: float, current: float) -> float:
    """Return what one reading adds to the previous one's total.

    A value below the previous one means the counter restarted from zero, so the whole
    current value is new.
    """
    return current - previous if current >= previous else current


def increase(samples: Iterable[CounterSample]) -> float:
    """Return the increase along ``samples`` (sorted by ``ts`` here), summing every step."""
    ordered = sorted(samples, key=lambda s: s.ts)
    total = 0.0
    for before, after in itertools.pairwise(ordered):
        total += step(before.value, after.value)
    return total


def increase_over(samples: Iterable[CounterSample], start: datetime, end: datetime) -> float:
    """Return the increase over the live window ``(start, end]`` (PRODUCT.md's rule).

    The readings in ``(start, end]`` plus the last reading at or before ``start`` are
    sorted by time; each step adds ``v[i] - v[i-1]`` when ``v[i] >= v[i-1]``, else ``v[i]``.
    """
    inside: list[CounterSample] = []
    baseline: CounterSample | None = None
    for sample in samples:
        if start < sample.ts <= end:
            inside.append(sample)
        elif sample.ts <= start and (baseline is None or sample.ts > baseline.ts):
            baseline = sample
    return increase([baseline, *inside] if baseline is not None else inside)


def increase_in_bucket(samples: Iterable[CounterSample], start: datetime, end: datetime) -> float:
    """Return the increase over the history bucket ``[start, end)``.

    The same rule as ``increase_over`` with the bucket convention of time-series databases
    (start inclusive, end exclusive): the readings in ``[start, end)`` plus the last reading
    before ``start``. Adjacent buckets therefore add up to the increase over their union.
    """
    inside: list[CounterSample] = []
    baseline: CounterSample | None = None
    for sample in samples:
        if start <= sample.ts < end:
            inside.append(sample)
        elif sample.ts < start and (baseline is None or sample.ts > baseline.ts):
            baseline = sample
    return increase([baseline, *inside] if baseline is not None else inside)
