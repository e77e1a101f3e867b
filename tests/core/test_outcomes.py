"""Storage errors are classified by SQLSTATE; backoff is capped and jittered."""

from __future__ import annotations

import pytest

from services.core.outcomes import StorageOutcome, backoff_s, classify


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        (None, StorageOutcome.RETRY),
        ("08006", StorageOutcome.RETRY),  # connection failure
        ("40001", StorageOutcome.RETRY),  # serialization failure
        ("40P01", StorageOutcome.RETRY),  # deadlock
        ("53100", StorageOutcome.RETRY),  # disk full
        ("57P01", StorageOutcome.RETRY),  # admin shutdown
        ("22003", StorageOutcome.REJECT),  # numeric value out of range
        ("23505", StorageOutcome.REJECT),  # unique violation
        ("42P01", StorageOutcome.FATAL),  # undefined table: a missing migration
        ("XX000", StorageOutcome.FATAL),
    ],
)
def test_sqlstate_is_classified(sqlstate: str | None, expected: StorageOutcome) -> None:
    """Transient failures retry, bad rows are rejected, anything unknown is fatal."""
    assert classify(sqlstate) is expected


def test_backoff_grows_and_is_capped() -> None:
    """Backoff doubles per attempt up to the cap; jitter scales it within [0.5, 1)."""
    assert backoff_s(0, 0.2, 10, jitter=1.0) == pytest.approx(0.2)
    assert backoff_s(3, 0.2, 10, jitter=1.0) == pytest.approx(1.6)
    assert backoff_s(50, 0.2, 10, jitter=1.0) == pytest.approx(10)
    assert backoff_s(50, 0.2, 10, jitter=0.0) == pytest.approx(5)
