"""What a batch of new readings changes, summarised once in ingest instead of in SQL.

A batch whose readings are all new is copied straight into ``readings``; what follows from
it — each device's latest values and last-seen time, the roll-up pieces of the minutes it
touched, the availability marks, the delivery counts — is computed here, in one pass over
the batch sorted by key, and sent as a few small row sets. (Before, PostgreSQL read a
second, staged copy of the batch four times for the same answers.)

A piece aggregates one (device, metric, minute) of the batch exactly as ``readings_1m``
holds a minute and as ``storage/rollups._AGGREGATE`` aggregates raw rows (that SQL stays
the rule for the fold's re-aggregation and for batches with duplicates;
``tests/storage/test_batch_summary_sql.py`` checks the two agree):

```
n            readings in the minute          first_ts / last_ts       oldest / newest ts
sum/min/max  over the numeric values         first_/last_value|text   at first_ts / last_ts
steps        sum of counter steps between consecutive readings with values (core.counters)
state_counts {text: readings} of the readings carrying text, None when none does
```
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from services.core.counters import step
from services.core.history import floor_minute
from services.core.readings import Reading

_MINUTE = timedelta(minutes=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_UNSORTED = "summarize needs readings sorted by key, no key twice"


class Piece(NamedTuple):
    """One (device, metric, minute) of a batch, aggregated as ``readings_1m`` holds it."""

    device_id: str
    metric: str
    minute: datetime
    n: int
    sum: float | None
    min: float | None
    max: float | None
    first_ts: datetime
    last_ts: datetime
    first_value: float | None
    last_value: float | None
    first_text: str | None
    last_text: str | None
    steps: float
    state_counts: dict[str, int] | None


class DeviceSpan(NamedTuple):
    """A device's oldest and newest reading in the batch."""

    device_id: str
    first_ts: datetime
    last_ts: datetime


class Delivered(NamedTuple):
    """Readings of one device received in one minute."""

    device_id: str
    minute: datetime
    readings: int


class BatchSummary(NamedTuple):
    """Everything derived from a batch of new readings, each list in key order."""

    pieces: list[Piece]
    latest: list[Reading]  # the newest reading of each (device, metric)
    devices: list[DeviceSpan]
    delivered: list[Delivered]


def summarize(ordered: Sequence[Reading]) -> BatchSummary:
    """Summarise readings sorted by (device, metric, ts), no key twice (see the module).

    Raises:
        ValueError: the readings are not sorted by key, or a key appears twice.
    """
    pieces: list[Piece] = []
    latest: list[Reading] = []
    devices: list[DeviceSpan] = []
    received = _Receipts(ordered)
    count = len(ordered)
    i = 0
    while i < count:
        j, piece = _minute_run(ordered, i, received)
        pieces.append(piece)
        device, metric, last = piece.device_id, piece.metric, ordered[j - 1]
        after = ordered[j] if j < count else None
        if after is None or after.device_id != device or after.metric != metric:
            if after is not None and (after.device_id, after.metric) < (device, metric):
                raise ValueError(_UNSORTED)
            latest.append(last)
        if devices and devices[-1].device_id == device:
            span = devices[-1]
            devices[-1] = span._replace(
                first_ts=min(span.first_ts, piece.first_ts), last_ts=max(span.last_ts, last.ts)
            )
        else:
            devices.append(DeviceSpan(device, piece.first_ts, last.ts))
        i = j
    return BatchSummary(pieces, latest, devices, received.delivered())


class _Receipts:
    """Readings per device and minute of receipt; most batches arrive within one minute."""

    def __init__(self, ordered: Sequence[Reading]) -> None:
        start = floor_minute(min(r.received_at for r in ordered)) if ordered else _EARLIEST
        self.first_minute = start
        self.first_minute_end = start + _MINUTE
        self.in_first: dict[str, int] = {}
        self.later: dict[tuple[str, datetime], int] = {}

    def add_later(self, device: str, received_at: datetime) -> None:
        key = (device, floor_minute(received_at))
        self.later[key] = self.later.get(key, 0) + 1

    def delivered(self) -> list[Delivered]:
        counts = dict(self.later)
        for device, n in self.in_first.items():
            key = (device, self.first_minute)
            counts[key] = counts.get(key, 0) + n
        return [Delivered(d, m, n) for (d, m), n in sorted(counts.items())]


def _minute_run(ordered: Sequence[Reading], i: int, received: _Receipts) -> tuple[int, Piece]:
    """The piece of the minute starting at ``ordered[i]`` and the index after it."""
    first = ordered[i]
    device, metric, minute = first.device_id, first.metric, floor_minute(first.ts)
    minute_end = minute + _MINUTE
    receipt_end = received.first_minute_end
    values: list[float] = []
    texts: dict[str, int] = {}
    steps = 0.0
    in_first = 0
    previous_ts = _EARLIEST
    previous_value: float | None = None
    j = i
    end = len(ordered)
    while j < end:
        r = ordered[j]
        if r.device_id != device or r.metric != metric or r.ts >= minute_end:
            break
        if r.ts <= previous_ts:
            raise ValueError(_UNSORTED)
        value = r.value
        if value is not None:
            if previous_value is not None:
                steps += step(previous_value, value)
            values.append(value)
        if r.text is not None:
            texts[r.text] = texts.get(r.text, 0) + 1
        if r.received_at < receipt_end:
            in_first += 1
        else:
            received.add_later(device, r.received_at)
        previous_ts, previous_value = r.ts, value
        j += 1
    after = ordered[j] if j < end else None
    if (
        after is not None
        and after.ts <= previous_ts
        and (after.device_id, after.metric)
        == (
            device,
            metric,
        )
    ):
        raise ValueError(_UNSORTED)
    if in_first:
        received.in_first[device] = received.in_first.get(device, 0) + in_first
    return j, _piece(first, ordered[j - 1], minute, j - i, values, steps, texts)


def _piece(
    first: Reading,
    last: Reading,
    minute: datetime,
    n: int,
    values: list[float],
    steps: float,
    texts: dict[str, int],
) -> Piece:
    total: float | None = None
    for v in values:  # in time order, one addition at a time, as SQL's sum()
        total = v if total is None else total + v
    return Piece(
        first.device_id,
        first.metric,
        minute,
        n,
        total,
        min(values) if values else None,
        max(values) if values else None,
        first.ts,
        last.ts,
        first.value,
        last.value,
        first.text,
        last.text,
        steps,
        dict(sorted(texts.items())) if texts else None,
    )
