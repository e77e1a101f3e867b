"""Waiting with a deadline: tests poll a condition, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    interval_s: float = 0.05,
    message: str = "",
) -> None:
    """Poll ``predicate`` until it returns something truthy.

    Raises:
        AssertionError: ``timeout_s`` passed first; carries ``message``.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
