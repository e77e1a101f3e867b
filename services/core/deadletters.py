"""Dead letters: one per refused message, its payload once, its refusals grouped by reason.

A message whose 2,000 metrics are all unknown is one dead letter with one group
(``unknown_metric``, 2,000 refused), not 2,000 copies of its payload: what a refused
message costs in storage is bounded by its own size plus a few hundred bytes per reason,
and there are only as many reasons as ``RejectReason`` has members.

Everything a dead letter stores as text goes through ``services.core.text`` here, so a
dead letter never holds what PostgreSQL text cannot (U+0000, lone surrogates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.core.readings import Rejection, RejectReason
from services.core.text import bounded, sanitised

# A group's detail: the first refusal's detail and how many more there were. Long enough
# for a reason with its value; short, so that details never rival the payload in size.
DETAIL_MAX_CHARS = 240
# Refused metric names listed per group (the payload holds them all); each cut to the
# longest name the registry allows.
METRICS_LISTED = 16
METRIC_NAME_MAX_CHARS = 64
# A topic outside the contract may be up to 65,535 bytes long; a dead letter keeps enough
# of it to see what it was.
TOPIC_MAX_CHARS = 1024


@dataclass(frozen=True, slots=True)
class RefusalGroup:
    """The refusals of one reason within one message."""

    reason: RejectReason
    detail: str
    refused: int  # readings, samples or messages refused, as each rejection counts one
    metrics: tuple[str, ...] = ()  # the first METRICS_LISTED refused metric names
    ts: datetime | None = None  # measured time of the first refused sample that had one

    @property
    def metric(self) -> str | None:
        """The first refused metric, when the refusals name metrics."""
        return self.metrics[0] if self.metrics else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused message: what arrived, once, and why parts or all of it were refused."""

    topic: str
    received_at: datetime
    payload: bytes | None
    park_id: str | None
    device_id: str | None
    groups: tuple[RefusalGroup, ...]

    @property
    def refused(self) -> int:
        """Refusals in the message, over all its groups."""
        return sum(group.refused for group in self.groups)


def dead_letter(first: Rejection, *more: Rejection) -> DeadLetter:
    """Group the rejections of one message by reason, in the order they first appear."""
    by_reason: dict[RejectReason, list[Rejection]] = {}
    for rejection in (first, *more):
        by_reason.setdefault(rejection.reason, []).append(rejection)
    return DeadLetter(
        topic=stored_topic(first.topic),
        received_at=first.received_at,
        payload=first.payload,
        park_id=first.park_id,
        device_id=first.device_id,
        groups=tuple(_group(reason, items) for reason, items in by_reason.items()),
    )


def _group(reason: RejectReason, rejections: list[Rejection]) -> RefusalGroup:
    more = len(rejections) - 1
    suffix = f" (and {more} more)" if more else ""
    detail = bounded(sanitised(rejections[0].detail), DETAIL_MAX_CHARS - len(suffix)) + suffix
    metrics: list[str] = []
    ts: datetime | None = None
    for rejection in rejections:
        if rejection.metric is not None and len(metrics) < METRICS_LISTED:
            metrics.append(bounded(sanitised(rejection.metric), METRIC_NAME_MAX_CHARS))
        if ts is None:
            ts = rejection.ts
    return RefusalGroup(reason, detail, len(rejections), tuple(metrics), ts)


def stored_topic(topic: str) -> str:
    """The topic as a dead letter keeps it: storable, and at most ``TOPIC_MAX_CHARS``."""
    return bounded(sanitised(topic), TOPIC_MAX_CHARS)


def minimal_dead_letter(letter: DeadLetter, detail: str) -> DeadLetter:
    """The fallback when the database refuses a dead letter: reason, topic and payload.

    The topic and detail are cut down to ASCII with backslash escapes, and the ids and the
    per-reading groups are left out, so that what remains is bytes and plain ASCII.
    """
    reason = letter.groups[0].reason if letter.groups else RejectReason.STORAGE_REJECTED
    return DeadLetter(
        topic=_ascii(letter.topic, TOPIC_MAX_CHARS),
        received_at=letter.received_at,
        payload=letter.payload,
        park_id=None,
        device_id=None,
        groups=(RefusalGroup(reason, _ascii(detail, DETAIL_MAX_CHARS), letter.refused),),
    )


def _ascii(text: str, max_chars: int) -> str:
    escaped = text.encode("ascii", "backslashreplace").decode("ascii").replace("\x00", "\\x00")
    return escaped[:max_chars]
