"""Storage error → what to do about it, by SQLSTATE class (as Telegraf's Postgres output does)."""

from __future__ import annotations

from enum import StrEnum


class StorageOutcome(StrEnum):
    """What the writer does after a failed write."""

    RETRY = "retry"
    REJECT = "reject"
    FATAL = "fatal"


# SQLSTATE classes (PostgreSQL Appendix A): 08 connection exception, 40 transaction
# rollback (serialization failure, deadlock), 53 insufficient resources, 57 operator
# intervention (admin shutdown, crash shutdown, cannot connect now), 58 system error.
_RETRY_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# 22 data exception and 23 integrity constraint violation: the rows themselves are bad.
_REJECT_CLASSES = frozenset({"22", "23"})


def classify(sqlstate: str | None) -> StorageOutcome:
    """Classify a failed write; no SQLSTATE means the connection broke before an answer."""
    if sqlstate is None:
        return StorageOutcome.RETRY
    klass = sqlstate[:2]
    if klass in _RETRY_CLASSES:
        return StorageOutcome.RETRY
    if klass in _REJECT_CLASSES:
        return StorageOutcome.REJECT
    return StorageOutcome.FATAL


def backoff_s(attempt: int, initial_s: float, max_s: float, jitter: float) -> float:
    """Capped exponential backoff with jitter; ``jitter`` in [0, 1) comes from the caller."""
    base = min(max_s, initial_s * (2.0 ** min(attempt, 30)))
    return base * (0.5 + jitter / 2)
