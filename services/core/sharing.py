"""When the platform republishes a park's signals on MQTT: on a period, and on alarm changes.

The publisher (``services.maintenance.sharing``) computes every park's signals each check
and asks a ``ShareSchedule`` which to publish: a park whose set of devices in alarm changed
since its last publication (a device entered or left alarm), or whose last publication is
``republish_s`` old. Time comes in as monotonic seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shared:
    """What was last published for one park."""

    at_s: float
    alarm_devices: frozenset[str]


class ShareSchedule:
    """Remembers each park's last publication and says which parks are due."""

    def __init__(self, republish_s: float) -> None:
        """Republish a park at least every ``republish_s`` seconds."""
        if republish_s <= 0:
            raise ValueError("republish_s must be positive")
        self._republish_s = republish_s
        self._shared: dict[str, Shared] = {}

    def due(self, park_id: str, alarm_devices: frozenset[str], *, now_s: float) -> bool:
        """Whether the park's signals must be published now."""
        last = self._shared.get(park_id)
        return (
            last is None
            or last.alarm_devices != alarm_devices
            or now_s - last.at_s >= self._republish_s
        )

    def published(self, park_id: str, alarm_devices: frozenset[str], *, now_s: float) -> None:
        """Record that the park's signals were published at ``now_s``."""
        self._shared[park_id] = Shared(now_s, alarm_devices)

    def gone(self, park_ids: Iterable[str]) -> list[str]:
        """Forget and return the parks published before that are not in ``park_ids``."""
        current = set(park_ids)
        removed = sorted(p for p in self._shared if p not in current)
        for park_id in removed:
            del self._shared[park_id]
        return removed

    def reset(self) -> None:
        """Forget every publication (a new leader, or a new broker connection, starts over)."""
        self._shared.clear()
