"""Which topics each ingest worker subscribes to: factories split among workers, or ``$share``.

Two ways for N workers to split the load (``IngestSettings.assignment``):

- ``parks``: the registry's parks are split among the workers factory by factory (a
  factory is one gateway and one Sparkplug B edge node, so each node's messages reach one
  worker, in order). Worker i of N takes the factories that rendezvous hashing gives it
  (the highest hash of park, factory and worker index wins), with plain subscriptions to
  exactly those factories' topics. Plain subscriptions live in the persistent session,
  which Mosquitto 2.0 saves and restores across a broker restart; ``$share`` ones it does
  not. Rendezvous hashing moves only the factories of the workers that come or go when N
  changes, and a new factory never moves the others. Factories, not whole parks: a fleet
  of a few parks (the benchmark's four) would otherwise split unevenly (3 to 1 there; its
  20 factories split 10 to 10). One worker alone subscribes to the whole root instead, so
  that a topic under no registered factory is still a dead letter.
- ``share``: every worker subscribes to the whole root through ``$share/{group}/``, for
  brokers that keep shared subscriptions in the session (EMQX).

A persistent session remembers every filter it ever subscribed to, so a worker also
unsubscribes each filter it may have held before (another assignment, the factories of
another worker, the filters of earlier versions) that it should not hold now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from schemas.telemetry import TOPIC_ROOT
from services.core.registry import Registry
from services.core.sparkplug_payload import NAMESPACE as SPARKPLUG_NAMESPACE
from services.core.topics import legacy_subscription_filters, subscription_filters

# The group the local stack's workers shared before factories were assigned: its filters are
# unsubscribed from sessions that may still hold them.
LEGACY_SHARE_GROUP = "ingest"
# Bytes of each rendezvous score: 64 bits make a tie between two workers negligible (and
# a tie still has one answer: the lower index wins).
_SCORE_BYTES = 8


class Assignment(StrEnum):
    """How ingest workers split the topics among themselves."""

    PARKS = "parks"
    SHARE = "share"


# A factory of the registry: (park_id, factory_id).
FactoryKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker ``index`` (from 1) of ``workers``; an index above ``workers`` owns nothing.

    A worker whose index is above the count is being retired: it subscribes to nothing
    and drains what its persistent session still holds.
    """

    index: int
    workers: int


@dataclass(frozen=True, slots=True)
class SubscriptionPlan:
    """The filters a worker holds, and those it unsubscribes because it may hold them."""

    filters: frozenset[str]
    stale: frozenset[str]


def follows_registry(assignment: Assignment, slot: WorkerSlot) -> bool:
    """Whether the worker's filters depend on the registry (one of several, by factories).

    A fleet load that adds factories then waits for such workers to subscribe to them, so
    that the new factories' first messages find a subscription (docs/delivery.md).
    """
    return assignment is Assignment.PARKS and (slot.workers, slot.index) != (1, 1)


def registry_factories(registry: Registry) -> frozenset[FactoryKey]:
    """Return every factory of the registry as (park_id, factory_id)."""
    return frozenset((park.park_id, f) for park in registry.parks.values() for f in park.factories)


def _score(factory: FactoryKey, index: int) -> int:
    park_id, factory_id = factory
    text = f"{park_id}/{factory_id}/{index}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=_SCORE_BYTES).digest(), "big")


def factory_owner(factory: FactoryKey, workers: int) -> int:
    """Return the index (from 1) of the worker of ``workers`` that owns ``factory``."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    return max(range(1, workers + 1), key=lambda index: (_score(factory, index), -index))


def owned_factories(slot: WorkerSlot, factories: Iterable[FactoryKey]) -> frozenset[FactoryKey]:
    """Return the factories of ``factories`` that worker ``slot`` owns."""
    if slot.index > slot.workers:
        return frozenset()
    return frozenset(f for f in factories if factory_owner(f, slot.workers) == slot.index)


def factory_filters(factory: FactoryKey) -> tuple[str, str]:
    """Return the filters of one factory: its devices' JSON topics and its edge node's.

    Everything under the factory, so that a device topic outside the contract there (an
    extra level, an unknown channel) is a ``bad_topic`` dead letter; the Sparkplug B
    filter takes every message type of the edge node and its devices
    (``spBv1.0/{park}/{type}/{factory}[/{device}]``).
    """
    park_id, factory_id = factory
    return (
        f"{TOPIC_ROOT}/{park_id}/{factory_id}/#",
        f"{SPARKPLUG_NAMESPACE}/{park_id}/+/{factory_id}/#",
    )


def _candidates(factories: Iterable[FactoryKey], share_group: str | None) -> set[str]:
    """Every filter an ingest session may hold from any assignment, group or version."""
    groups = {None, LEGACY_SHARE_GROUP, share_group}
    found = {f for factory in factories for f in factory_filters(factory)}
    for group in groups:
        found.update(subscription_filters(group))
        found.update(legacy_subscription_filters(group))
    return found


def subscription_plan(
    assignment: Assignment,
    slot: WorkerSlot,
    factories: Iterable[FactoryKey],
    share_group: str | None = None,
) -> SubscriptionPlan:
    """Return what worker ``slot`` subscribes to over the registered ``factories``.

    Args:
        assignment: How the workers split the topics.
        slot: This worker's index and the number of workers.
        factories: The factories in the registry now, as (park_id, factory_id).
        share_group: The ``$share`` group (used with ``Assignment.SHARE`` only).

    Raises:
        ValueError: ``Assignment.SHARE`` without a group.
    """
    known = frozenset(factories)
    if assignment is Assignment.SHARE:
        if not share_group:
            raise ValueError("assignment share needs a share group")
        filters = frozenset(subscription_filters(share_group))
    elif follows_registry(assignment, slot):
        filters = frozenset(f for k in owned_factories(slot, known) for f in factory_filters(k))
    else:
        filters = frozenset(subscription_filters(None))
    stale = frozenset(_candidates(known, share_group) - filters)
    return SubscriptionPlan(filters=filters, stale=stale)
