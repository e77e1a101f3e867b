"""What an ingest worker's session is subscribed to, and what it must change next.

The bookkeeping behind ``mqtt.py``'s subscriptions, without a client: the filters the
assignment gives this worker over the registry in use (``services/core/assignment.py``),
the SUBSCRIBE packets the broker has not answered yet, and the registry version whose
filters it has acknowledged (which the heartbeat reports and a fleet load adding
factories waits for). Not thread-safe by itself: the consumer holds one lock around each
call and the packets it sends, so that a SUBACK is never read before its packet is
recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.config import IngestSettings
from services.core.assignment import FactoryKey, SubscriptionPlan, subscription_plan


@dataclass(frozen=True, slots=True)
class Changes:
    """Filters to subscribe to, then filters to unsubscribe from (in that order)."""

    subscribe: frozenset[str]
    unsubscribe: frozenset[str]


class Subscriptions:
    """One worker's filters over the registry in use."""

    def __init__(
        self, settings: IngestSettings, factories: Iterable[FactoryKey], registry_version: int
    ) -> None:
        """Start from the registry the worker loaded before connecting."""
        self._settings = settings
        self._plan = self._plan_for(frozenset(factories))
        self._target_version = registry_version
        self._subscribed_version = 0
        self._awaited: set[int] = set()
        self._connected = False
        self._announce = False

    @property
    def held(self) -> int:
        """How many filters this worker holds (or will hold once connected)."""
        return len(self._plan.filters)

    @property
    def subscribed_version(self) -> int:
        """The last registry version whose filters the broker has acknowledged."""
        return self._subscribed_version

    def connected(self) -> Changes:
        """A connection is up: every filter of ours, then every one the session may hold.

        A persistent session keeps the filters of another assignment, worker count or
        version; they go after ours are in place.
        """
        self._connected = True
        self._awaited.clear()
        self._announce = True
        return Changes(self._plan.filters, self._plan.stale)

    def disconnected(self) -> None:
        """The connection is gone; its unanswered packets will never be answered."""
        self._connected = False

    def assign(self, factories: Iterable[FactoryKey], registry_version: int) -> Changes:
        """Follow a registry change: the new factories' filters, then the removed ones'.

        Factories never move between workers on a registry change (an owner depends only
        on the factory and the worker count), so only new and removed ones change filters.
        Nothing to send while disconnected: the next connection sends every filter.
        """
        old = self._plan
        self._plan = self._plan_for(frozenset(factories))
        self._target_version = registry_version
        if not self._connected:
            return Changes(frozenset(), frozenset())
        return Changes(self._plan.filters - old.filters, old.filters - self._plan.filters)

    def sent(self, mid: int) -> None:
        """Record a SUBSCRIBE packet sent on the current connection."""
        self._awaited.add(mid)

    def answered(self, mid: int) -> bool:
        """Record a SUBACK; return whether this connection's first set is now complete."""
        self._awaited.discard(mid)
        return self.settle()

    def settle(self) -> bool:
        """Catch the subscribed version up once nothing is awaited.

        Returns:
            Whether every filter sent since the connection came up has now been answered
            for the first time (the worker then says it is subscribed).
        """
        if not self._connected or self._awaited:
            return False
        self._subscribed_version = self._target_version
        first, self._announce = self._announce, False
        return first

    def _plan_for(self, factories: frozenset[FactoryKey]) -> SubscriptionPlan:
        settings = self._settings
        return subscription_plan(
            settings.assignment, settings.slot, factories, settings.share_group
        )
