"""Factories split among ingest workers: disjoint, complete, stable, and the filters they imply."""

from __future__ import annotations

from collections import Counter

import pytest

from services.core.assignment import (
    LEGACY_SHARE_GROUP,
    Assignment,
    WorkerSlot,
    factory_filters,
    factory_owner,
    follows_registry,
    owned_factories,
    registry_factories,
    subscription_plan,
)
from tests.harness.small_fleet import registry

FACTORIES = [(f"park-{p:02d}", f"f-{p:02d}-{f:02d}") for p in range(40) for f in range(10)]
# The benchmark's fleet (tools/peer_load.py): 4 parks of 5 factories.
BENCH = [
    (f"peerbench-p{p + 1}", f"peerbench-f{p * 5 + f + 1:02d}") for p in range(4) for f in range(5)
]


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 16])
def test_every_factory_has_exactly_one_owner(workers: int) -> None:
    """The workers' factory sets are disjoint and together cover every factory."""
    sets = [owned_factories(WorkerSlot(i, workers), FACTORIES) for i in range(1, workers + 1)]
    assert sum(len(s) for s in sets) == len(FACTORIES)
    assert frozenset().union(*sets) == frozenset(FACTORIES)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_factories_spread_over_every_worker(workers: int) -> None:
    """Each worker of a few gets a fair share of 400 factories (within half of the mean)."""
    sizes = [len(owned_factories(WorkerSlot(i, workers), FACTORIES)) for i in range(1, workers + 1)]
    mean = len(FACTORIES) / workers
    assert all(mean / 2 < size < mean * 1.5 for size in sizes), sizes


def test_the_benchmark_fleet_splits_evenly_over_two_workers() -> None:
    """The benchmark's 20 factories go 10 and 10 (its 4 parks whole would go 3 and 1)."""
    assert Counter(factory_owner(f, 2) for f in BENCH) == {1: 10, 2: 10}


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 4), (4, 3), (3, 2)])
def test_a_change_of_worker_count_moves_only_factories_of_the_worker_added_or_removed(
    before: int, after: int
) -> None:
    """Rendezvous hashing: factories move only to a new worker, or away from a removed one."""
    for factory in FACTORIES:
        old, new = factory_owner(factory, before), factory_owner(factory, after)
        if old != new:
            assert new > before or old > after, (factory, old, new)


def test_the_owner_does_not_depend_on_the_other_factories() -> None:
    """A new factory in the registry moves no other factory."""
    slot = WorkerSlot(2, 3)
    some = FACTORIES[:100]
    assert owned_factories(slot, some) == owned_factories(slot, FACTORIES) & frozenset(some)


def test_a_worker_above_the_count_owns_nothing() -> None:
    """A worker being retired (index above the count) subscribes to nothing."""
    plan = subscription_plan(Assignment.PARKS, WorkerSlot(3, 2), FACTORIES[:10])
    assert plan.filters == frozenset()
    assert {f for k in FACTORIES[:10] for f in factory_filters(k)} <= plan.stale


def test_one_worker_takes_the_whole_root_and_drops_every_other_filter() -> None:
    """Alone, a worker subscribes to the root (unknown parks stay dead letters)."""
    plan = subscription_plan(Assignment.PARKS, WorkerSlot(1, 1), [("a", "fa"), ("b", "fb")])
    assert plan.filters == {"parksense/v1/#", "spBv1.0/#"}
    assert {"parksense/v1/a/fa/#", "spBv1.0/b/+/fb/#"} <= plan.stale
    assert f"$share/{LEGACY_SHARE_GROUP}/parksense/v1/#" in plan.stale
    assert "parksense/v1/+/+/+/telemetry" in plan.stale


def test_several_workers_take_their_factories_only() -> None:
    """With two workers each holds its own factories' JSON and Sparkplug filters, nothing else."""
    factories = [("a", f"f{i}") for i in range(6)] + [("b", "g1")]
    plans = [subscription_plan(Assignment.PARKS, WorkerSlot(i, 2), factories) for i in (1, 2)]
    for i, plan in enumerate(plans, start=1):
        mine = owned_factories(WorkerSlot(i, 2), factories)
        assert plan.filters == {f for k in mine for f in factory_filters(k)}
        assert "parksense/v1/#" in plan.stale
        assert plan.filters.isdisjoint(plan.stale)
    assert plans[0].filters.isdisjoint(plans[1].filters)
    assert plans[0].filters <= plans[1].stale


def test_share_takes_the_root_through_the_group() -> None:
    """Shared: the root filters under $share/{group}/, and the per-factory ones are stale."""
    plan = subscription_plan(Assignment.SHARE, WorkerSlot(1, 2), [("a", "f")], share_group="g")
    assert plan.filters == {"$share/g/parksense/v1/#", "$share/g/spBv1.0/#"}
    assert {"parksense/v1/a/f/#", "parksense/v1/#", "$share/g/parksense/v1/+/+/+/status"} <= (
        plan.stale
    )


def test_share_without_a_group_is_refused() -> None:
    """A shared assignment needs its group."""
    with pytest.raises(ValueError, match="share group"):
        subscription_plan(Assignment.SHARE, WorkerSlot(1, 2), [("a", "f")])


def test_factory_filters_cover_its_json_topics_and_its_edge_node() -> None:
    """A factory's filters: everything under its JSON topics, every Sparkplug type of its node."""
    assert factory_filters(("hebi-tech", "f01")) == (
        "parksense/v1/hebi-tech/f01/#",
        "spBv1.0/hebi-tech/+/f01/#",
    )


def test_only_several_workers_by_factories_follow_the_registry() -> None:
    """One worker (the root) and shared workers subscribe the same whatever the registry holds."""
    assert follows_registry(Assignment.PARKS, WorkerSlot(1, 2))
    assert follows_registry(Assignment.PARKS, WorkerSlot(3, 2))
    assert not follows_registry(Assignment.PARKS, WorkerSlot(1, 1))
    assert not follows_registry(Assignment.SHARE, WorkerSlot(1, 2))


def test_registry_factories_are_every_park_and_factory() -> None:
    """The registry's factories as (park, factory) pairs."""
    assert registry_factories(registry()) == {("p1", "f1")}
