"""Which topics each ingest worker subscribes to: parks split among workers, or ``$share``.

Two ways for N workers to split the load (``IngestSettings.assignment``):

- ``parks``: worker i of N takes the parks that rendezvous hashing gives it (the highest
  hash of park and worker index wins), with plain subscriptions to exactly those parks'
  topics. Plain subscriptions live in the persistent session, which Mosquitto 2.0 saves
  and restores across a broker restart; ``$share`` ones it does not. Rendezvous hashing
  moves only the parks of the workers that come or go when N changes, and a new park
  never moves the others. One worker alone subscribes to the whole root instead, so that
  a topic under no registered park is still a dead letter.
- ``share``: every worker subscribes to the whole root through ``$share/{group}/``, for
  brokers that keep shared subscriptions in the session (EMQX).

A persistent session remembers every filter it ever subscribed to, so a worker also
unsubscribes each filter it may have held before (another assignment, the parks of
another worker, the filters of earlier versions) that it should not hold now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from schemas.telemetry import TOPIC_ROOT
from services.core.sparkplug_payload import NAMESPACE as SPARKPLUG_NAMESPACE
from services.core.topics import legacy_subscription_filters, subscription_filters

# The group the local stack's workers shared before parks were assigned: its filters are
# unsubscribed from sessions that may still hold them.
LEGACY_SHARE_GROUP = "ingest"
# Bytes of each rendezvous score: 64 bits make a tie between two workers negligible (and
# a tie still has one answer: the lower index wins).
_SCORE_BYTES = 8


class Assignment(StrEnum):
    """How ingest workers split the topics among themselves."""

    PARKS = "parks"
    SHARE = "share"


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
    """Whether the worker's filters depend on the registry (one of several, by parks).

    A fleet load that adds a park then waits for such workers to subscribe to it, so that
    the new park's first messages find a subscription (docs/delivery.md).
    """
    return assignment is Assignment.PARKS and (slot.workers, slot.index) != (1, 1)


def _score(park_id: str, index: int) -> int:
    digest = hashlib.blake2b(f"{park_id}/{index}".encode(), digest_size=_SCORE_BYTES).digest()
    return int.from_bytes(digest, "big")


def park_owner(park_id: str, workers: int) -> int:
    """Return the index (from 1) of the worker of ``workers`` that owns ``park_id``."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    return max(range(1, workers + 1), key=lambda index: (_score(park_id, index), -index))


def owned_parks(slot: WorkerSlot, park_ids: Iterable[str]) -> frozenset[str]:
    """Return the parks of ``park_ids`` that worker ``slot`` owns."""
    if slot.index > slot.workers:
        return frozenset()
    return frozenset(p for p in park_ids if park_owner(p, slot.workers) == slot.index)


def park_filters(park_id: str) -> tuple[str, str]:
    """Return the filters of one park: its JSON topics and its Sparkplug B group.

    Everything under the park, so that a topic outside the contract there (an extra level,
    an unknown channel) is a ``bad_topic`` dead letter, and the park's signals topic is
    seen and ignored as before.
    """
    return f"{TOPIC_ROOT}/{park_id}/#", f"{SPARKPLUG_NAMESPACE}/{park_id}/#"


def _candidates(park_ids: Iterable[str], share_group: str | None) -> set[str]:
    """Every filter an ingest session may hold from any assignment, group or version."""
    groups = {None, LEGACY_SHARE_GROUP, share_group}
    found = {f for p in park_ids for f in park_filters(p)}
    for group in groups:
        found.update(subscription_filters(group))
        found.update(legacy_subscription_filters(group))
    return found


def subscription_plan(
    assignment: Assignment,
    slot: WorkerSlot,
    park_ids: Iterable[str],
    share_group: str | None = None,
) -> SubscriptionPlan:
    """Return what worker ``slot`` subscribes to over the registered ``park_ids``.

    Args:
        assignment: How the workers split the topics.
        slot: This worker's index and the number of workers.
        park_ids: The parks in the registry now.
        share_group: The ``$share`` group (used with ``Assignment.SHARE`` only).

    Raises:
        ValueError: ``Assignment.SHARE`` without a group.
    """
    parks = frozenset(park_ids)
    if assignment is Assignment.SHARE:
        if not share_group:
            raise ValueError("assignment share needs a share group")
        filters = frozenset(subscription_filters(share_group))
    elif follows_registry(assignment, slot):
        filters = frozenset(f for p in owned_parks(slot, parks) for f in park_filters(p))
    else:
        filters = frozenset(subscription_filters(None))
    stale = frozenset(_candidates(parks, share_group) - filters)
    return SubscriptionPlan(filters=filters, stale=stale)
