"""Batcher: flushes by size or by age, never drops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.core.batching import Batcher
from services.core.readings import MessageOutcome, Reading, Rejection, RejectReason, StatusUpdate

TS = datetime(2026, 11, 26, tzinfo=UTC)


def outcome(readings: int = 1, rejections: int = 0) -> MessageOutcome:
    return MessageOutcome(
        readings=tuple(Reading("d", f"m{i}", TS, float(i), None, TS) for i in range(readings)),
        rejections=tuple(
            Rejection(RejectReason.UNKNOWN_METRIC, "x", "t", TS) for _ in range(rejections)
        ),
    )


def test_batcher_flushes_when_size_reached() -> None:
    """The batch is due as soon as it holds max_rows rows."""
    batcher = Batcher(max_rows=5, max_age_s=10)
    batcher.add(0, outcome(3), now=0.0)
    assert not batcher.due(now=0.0)
    batcher.add(1, outcome(2), now=0.0)
    assert batcher.full
    assert batcher.due(now=0.0)


def test_batcher_flushes_when_oldest_reading_is_too_old() -> None:
    """The batch is due once its oldest message has waited max_age_s."""
    batcher = Batcher(max_rows=100, max_age_s=0.2)
    batcher.add(0, outcome(1), now=10.0)
    batcher.add(1, outcome(1), now=10.15)
    assert not batcher.due(now=10.19)
    assert batcher.seconds_until_due(now=10.1) == pytest.approx(0.1)
    assert batcher.due(now=10.25)


def test_empty_batcher_is_never_due() -> None:
    """Nothing pending, nothing to flush."""
    batcher = Batcher(max_rows=1, max_age_s=0.1)
    assert not batcher.due(now=1e9)
    assert batcher.seconds_until_due(now=0) is None


def test_take_returns_everything_in_arrival_order_and_resets() -> None:
    """Taking a batch hands over tokens, readings, dead letters and statuses, then starts over."""
    batcher = Batcher(max_rows=100, max_age_s=1)
    batcher.add(7, outcome(2, 3), now=0)
    status = StatusUpdate("d", True, TS, TS)
    batcher.add(8, MessageOutcome(status=status), now=0)
    batch = batcher.take()
    assert batch.tokens == [7, 8]
    assert len(batch.readings) == 2
    assert [letter.refused for letter in batch.dead_letters] == [3]
    assert batch.statuses == [status]
    assert batcher.rows == 0
    assert batcher.messages == 0
    assert not batcher.due(now=100)


def test_empty_message_still_counts_as_a_row() -> None:
    """A message that produced nothing still has to be acknowledged, so it occupies a row."""
    batcher = Batcher(max_rows=1, max_age_s=1)
    batcher.add(0, MessageOutcome(), now=0)
    assert batcher.due(now=0)


@pytest.mark.parametrize(("rows", "age"), [(0, 1.0), (1, 0.0)])
def test_batcher_refuses_nonsense_settings(rows: int, age: float) -> None:
    """Settings that could never flush are refused."""
    with pytest.raises(ValueError, match="max_"):
        Batcher(max_rows=rows, max_age_s=age)
