"""Parse the API's time parameters: bucket and window widths like ``5m``, ``1h``, ``300s``."""

from __future__ import annotations

import re
from datetime import timedelta

# ASCII digits only: int() would also read other scripts' digits (e.g. Arabic-Indic).
_DURATION = re.compile(r"^([0-9]{1,9})(s|m|h|d)$")
DURATION_PATTERN = _DURATION.pattern
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Buckets narrower than a second would only fragment queries; wider than a year mean nothing.
_MIN_S = 1
_MAX_S = 366 * 86400


def parse_duration(text: str) -> timedelta:
    """Parse ``<n><s|m|h|d>`` into a timedelta.

    Raises:
        ValueError: the text is not such a duration, or it is out of bounds.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 1d")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not _MIN_S <= seconds <= _MAX_S:
        raise ValueError(f"{text!r} must be between 1s and 366d")
    return timedelta(seconds=seconds)
