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

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import reduce
from itertools import chain
from operator import add, attrgetter
from typing import NamedTuple

from services.core.counters import step
from services.core.history import floor_minute
from services.core.readings import Reading

_MINUTE = timedelta(minutes=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
_RECEIVED_AT = attrgetter("received_at")
# Named tuples are built with tuple.__new__: their generated __new__ is a Python function.
_new = tuple.__new__
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

    One pass over the batch: each turn of the loop takes one piece, up to the first reading
    of the next (``after``).

    Raises:
        ValueError: the readings are not sorted by key, or a key appears twice.
    """
    pieces: list[Piece] = []
    latest: list[Reading] = []
    devices: list[DeviceSpan] = []
    if not ordered:
        return BatchSummary(pieces, latest, devices, [])
    # Most batches arrive within one minute: readings received in the batch's first minute
    # are counted per device, without flooring each receipt time.
    first_minute = floor_minute(min(map(_RECEIVED_AT, ordered)))
    receipt_end = first_minute + _MINUTE
    in_first: dict[str, int] = {}
    later: dict[tuple[str, datetime], int] = {}
    span_device, span_first, span_last = ordered[0].device_id, _LATEST, _EARLIEST
    minutes: dict[datetime, datetime] = {}  # the minute of a ts (a batch holds few ts)
    rest = iter(ordered)
    after: Reading | None = next(rest)
    while after is not None:
        minute = minutes.get(after.ts)
        if minute is None:
            minute = minutes[after.ts] = floor_minute(after.ts)
        piece, last, received_first, after = _take_piece(after, minute, rest, receipt_end, later)
        pieces.append(piece)
        device, metric = piece.device_id, piece.metric
        if received_first:
            in_first[device] = in_first.get(device, 0) + received_first
        if after is None or after.metric != metric or after.device_id != device:
            if after is not None and (after.device_id, after.metric) < (device, metric):
                raise ValueError(_UNSORTED)
            latest.append(last)
        if device != span_device:
            devices.append(_new(DeviceSpan, (span_device, span_first, span_last)))
            span_device, span_first, span_last = device, piece.first_ts, last.ts
        else:
            span_first, span_last = min(span_first, piece.first_ts), max(span_last, last.ts)
    devices.append(_new(DeviceSpan, (span_device, span_first, span_last)))
    return BatchSummary(pieces, latest, devices, _delivered(in_first, first_minute, later))


def _take_piece(
    first: Reading,
    minute: datetime,
    rest: Iterator[Reading],
    receipt_end: datetime,
    later: dict[tuple[str, datetime], int],
) -> tuple[Piece, Reading, int, Reading | None]:
    """Take the piece starting at ``first`` (in ``minute``) from ``rest``.

    Returns:
        The piece, its last reading, how many of its readings were received before
        ``receipt_end`` (the others are counted in ``later``), and the first reading of the
        next piece (None at the end of the batch).
    """
    device, metric = first.device_id, first.metric
    minute_end = minute + _MINUTE
    values: list[float] = []
    texts: dict[str, int] = {}
    n = received_first = 0
    steps = 0.0
    previous_ts = _EARLIEST
    previous_value: float | None = None
    last = first
    after: Reading | None = None
    for r in chain((first,), rest):
        r_device, r_metric, ts, value, text, received_at = r
        if r_metric != metric or r_device != device or ts >= minute_end:
            after = r
            break
        if ts <= previous_ts:
            raise ValueError(_UNSORTED)
        if value is not None:
            if previous_value is not None:
                steps += step(previous_value, value)
            values.append(value)
        if text is not None:
            texts[text] = texts.get(text, 0) + 1
        if received_at < receipt_end:
            received_first += 1
        else:
            key = (device, floor_minute(received_at))
            later[key] = later.get(key, 0) + 1
        previous_ts, previous_value, last = ts, value, r
        n += 1
    return _piece(first, last, minute, n, values, steps, texts), last, received_first, after


def _delivered(
    in_first: dict[str, int], first_minute: datetime, later: dict[tuple[str, datetime], int]
) -> list[Delivered]:
    """Readings per device and minute of receipt, in key order."""
    counts = dict(later)
    for device, n in in_first.items():
        key = (device, first_minute)
        counts[key] = counts.get(key, 0) + n
    return [_new(Delivered, (d, m, n)) for (d, m), n in sorted(counts.items())]


def _piece(
    first: Reading,
    last: Reading,
    minute: datetime,
    n: int,
    values: list[float],
    steps: float,
    texts: dict[str, int],
) -> Piece:
    # In time order, one addition at a time, as SQL's sum() (not sum(): it starts from 0,
    # and from Python 3.12 compensates rounding).
    total = reduce(add, values) if values else None
    return _new(
        Piece,
        (
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
        ),
    )
