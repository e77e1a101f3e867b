"""Batcher: collects judged messages and says when to flush, by size or by age."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.deadletters import DeadLetter, dead_letter
from services.core.readings import MessageOutcome, Reading, StatusUpdate
from services.core.sparkplug_payload import Frame


@dataclass(slots=True)
class Batch:
    """Messages flushed together in one transaction, in arrival order."""

    tokens: list[int] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)  # one per refused message
    statuses: list[StatusUpdate] = field(default_factory=list)
    # Sparkplug B messages, judged in the write transaction against their edge nodes' state.
    frames: list[Frame] = field(default_factory=list)

    @property
    def messages(self) -> int:
        """Messages in the batch."""
        return len(self.tokens)


class Batcher:
    """Collects messages until ``max_rows`` rows or until the oldest is ``max_age_s`` old.

    Time is always passed in (``now``, monotonic seconds); the batcher never reads a clock.
    The batcher itself never drops: its bound is the caller's, who stops feeding it while
    ``full`` (the broker then holds the rest, since nothing is acknowledged).
    """

    def __init__(self, max_rows: int, max_age_s: float) -> None:
        """Create an empty batcher."""
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._batch = Batch()
        self._rows = 0
        self._oldest: float | None = None

    @property
    def rows(self) -> int:
        """Rows pending."""
        return self._rows

    @property
    def messages(self) -> int:
        """Messages pending."""
        return self._batch.messages

    @property
    def full(self) -> bool:
        """Whether the size trigger has fired."""
        return self._rows >= self.max_rows

    def add(self, token: int, outcome: MessageOutcome | Frame, now: float) -> None:
        """Add one judged message (or a Sparkplug one, judged when written) by its token."""
        if self._oldest is None:
            self._oldest = now
        self._batch.tokens.append(token)
        if isinstance(outcome, Frame):
            self._batch.frames.append(outcome)
            self._rows += max(1, len(outcome.metrics))
            return
        self._batch.readings.extend(outcome.readings)
        if outcome.rejections:
            self._batch.dead_letters.append(dead_letter(*outcome.rejections))
        if outcome.status is not None:
            self._batch.statuses.append(outcome.status)
        self._rows += outcome.rows

    def due(self, now: float) -> bool:
        """Whether the batch should be flushed now."""
        if self._oldest is None:
            return False
        return self.full or now - self._oldest >= self.max_age_s

    def seconds_until_due(self, now: float) -> float | None:
        """Seconds until the age trigger fires, 0 when due, None when empty."""
        if self._oldest is None:
            return None
        if self.full:
            return 0.0
        return max(0.0, self._oldest + self.max_age_s - now)

    def take(self) -> Batch:
        """Return the pending batch and start a new one."""
        batch, self._batch = self._batch, Batch()
        self._rows = 0
        self._oldest = None
        return batch
