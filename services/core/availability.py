"""A device's online state as a time series: transitions with their reason, and online share.

The rule is the live signals' one, applied at every instant ``t``: a device is online when
its newest reading at or before ``t`` is at most the timeout old and its retained status
(the newest status message at or before ``t``) is not an offline message sent at or after
that reading. Readings come in as spans (first and last reading of a run in which readings
are never more than the timeout apart, e.g. one per-minute roll-up row when the timeout is
at least a minute), status messages as events.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class AvailabilityReason(StrEnum):
    """Why a device went online or offline."""

    READING = "reading"  # a reading arrived after it was offline
    STATUS = "status"  # an online status message lifted an earlier offline one
    LAST_WILL = "last_will"  # an offline status message (the broker's last will, or the device's)
    SILENCE = "silence"  # no reading for longer than the timeout
    # Reserved: contract v1 status messages cannot tell a clean disconnect from a last will.
    CLEAN_DISCONNECT = "clean_disconnect"


@dataclass(frozen=True, slots=True)
class ReadingSpan:
    """A run of readings no more than the timeout apart, from the first to the last."""

    first_ts: datetime
    last_ts: datetime


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A status message, and for an offline one the first reading strictly after it."""

    ts: datetime
    online: bool
    resumed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The device became online (or offline) at ``ts``, for ``reason``."""

    ts: datetime
    online: bool
    reason: AvailabilityReason


@dataclass(frozen=True, slots=True)
class Availability:
    """A device's online state over ``[start, end)``."""

    start: datetime
    end: datetime
    online_at_start: bool
    transitions: tuple[Transition, ...]
    online_s: float

    @property
    def online_share(self) -> float:
        """Online time as a fraction of the interval."""
        total = (self.end - self.start).total_seconds()
        return self.online_s / total if total > 0 else 0.0


def presence_intervals(
    spans: Iterable[ReadingSpan], timeout: timedelta
) -> list[tuple[datetime, datetime]]:
    """Merge spans into half-open intervals ``[first, last + timeout)`` of fresh readings."""
    merged: list[tuple[datetime, datetime]] = []
    for span in sorted(spans, key=lambda s: s.first_ts):
        begin, finish = span.first_ts, span.last_ts + timeout
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


class _Timeline:
    """Evaluates the online rule just after any instant (right limits)."""

    def __init__(
        self, intervals: list[tuple[datetime, datetime]], statuses: Sequence[StatusEvent]
    ) -> None:
        self.intervals = intervals
        self.starts = [begin for begin, _ in intervals]
        self.statuses = sorted(statuses, key=lambda s: s.ts)
        self.status_ts = [s.ts for s in self.statuses]

    def present(self, t: datetime) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.intervals[i][1]

    def blocked(self, t: datetime) -> bool:
        i = bisect.bisect_right(self.status_ts, t) - 1
        if i < 0:
            return False
        status = self.statuses[i]
        if status.online:
            return False
        return status.resumed_at is None or status.resumed_at > t

    def online(self, t: datetime) -> bool:
        return self.present(t) and not self.blocked(t)


def availability(
    spans: Iterable[ReadingSpan],
    statuses: Sequence[StatusEvent],
    *,
    start: datetime,
    end: datetime,
    timeout: timedelta,
) -> Availability:
    """Return the online state over ``[start, end)``: its value at ``start`` and its changes.

    Args:
        spans: the device's readings as spans; those before ``start - timeout`` do not matter.
        statuses: the device's status messages; the newest before ``start`` matters.
        start: beginning of the interval.
        end: end of the interval (exclusive).
        timeout: how old the newest reading may be for the device to be online.

    Returns:
        The state at ``start``, each transition inside ``(start, end)`` with its reason, and
        the online time. An offline transition at ``last + timeout`` means silence.
    """
    intervals = presence_intervals(spans, timeout)
    timeline = _Timeline(intervals, statuses)
    went_on: dict[datetime, AvailabilityReason] = {}
    went_off: dict[datetime, AvailabilityReason] = {}
    for begin, finish in intervals:
        went_on[begin] = AvailabilityReason.READING
        went_off.setdefault(finish, AvailabilityReason.SILENCE)
    for status in timeline.statuses:
        if status.online:
            went_on.setdefault(status.ts, AvailabilityReason.STATUS)
        else:
            went_off[status.ts] = AvailabilityReason.LAST_WILL
            if status.resumed_at is not None:
                went_on[status.resumed_at] = AvailabilityReason.READING
    moments = sorted(t for t in went_on.keys() | went_off.keys() if start < t < end)

    state = timeline.online(start)
    online_at_start = state
    transitions: list[Transition] = []
    online_s = 0.0
    since = start
    for t in moments:
        now_online = timeline.online(t)
        if now_online == state:
            continue
        if state:
            online_s += (t - since).total_seconds()
        reason = went_on.get(t) if now_online else went_off.get(t)
        fallback = AvailabilityReason.READING if now_online else AvailabilityReason.SILENCE
        transitions.append(Transition(t, now_online, reason or fallback))
        state, since = now_online, t
    if state and end > since:
        online_s += (end - since).total_seconds()
    return Availability(
        start=start,
        end=end,
        online_at_start=online_at_start,
        transitions=tuple(transitions),
        online_s=online_s,
    )
