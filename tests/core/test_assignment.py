"""Parks split among ingest workers: disjoint, complete, stable, and the filters they imply."""

from __future__ import annotations

import pytest

from services.core.assignment import (
    LEGACY_SHARE_GROUP,
    Assignment,
    WorkerSlot,
    owned_parks,
    park_filters,
    park_owner,
    subscription_plan,
)

PARKS = [f"park-{i:03d}" for i in range(400)]


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 16])
def test_every_park_has_exactly_one_owner(workers: int) -> None:
    """The workers' park sets are disjoint and together cover every park."""
    sets = [owned_parks(WorkerSlot(i, workers), PARKS) for i in range(1, workers + 1)]
    assert sum(len(s) for s in sets) == len(PARKS)
    assert frozenset().union(*sets) == frozenset(PARKS)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_parks_spread_over_every_worker(workers: int) -> None:
    """Each worker of a few gets a fair share of 400 parks (within half of the mean)."""
    sizes = [len(owned_parks(WorkerSlot(i, workers), PARKS)) for i in range(1, workers + 1)]
    mean = len(PARKS) / workers
    assert all(mean / 2 < size < mean * 1.5 for size in sizes), sizes


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 4), (4, 3), (3, 2)])
def test_a_change_of_worker_count_moves_only_parks_of_the_worker_added_or_removed(
    before: int, after: int
) -> None:
    """Rendezvous hashing: parks move only to a new worker, or away from a removed one."""
    for park in PARKS:
        old, new = park_owner(park, before), park_owner(park, after)
        if old != new:
            assert new > before or old > after, (park, old, new)


def test_the_owner_does_not_depend_on_the_other_parks() -> None:
    """A new park in the registry moves no other park."""
    slot = WorkerSlot(2, 3)
    assert owned_parks(slot, PARKS[:100]) == owned_parks(slot, PARKS) & frozenset(PARKS[:100])


def test_a_worker_above_the_count_owns_nothing() -> None:
    """A worker being retired (index above the count) subscribes to nothing."""
    plan = subscription_plan(Assignment.PARKS, WorkerSlot(3, 2), PARKS[:10])
    assert plan.filters == frozenset()
    assert {f for p in PARKS[:10] for f in park_filters(p)} <= plan.stale


def test_one_worker_takes_the_whole_root_and_drops_every_other_filter() -> None:
    """Alone, a worker subscribes to the root (unknown parks stay dead letters)."""
    plan = subscription_plan(Assignment.PARKS, WorkerSlot(1, 1), ["a", "b"])
    assert plan.filters == {"parksense/v1/#", "spBv1.0/#"}
    assert {"parksense/v1/a/#", "spBv1.0/b/#"} <= plan.stale
    assert f"$share/{LEGACY_SHARE_GROUP}/parksense/v1/#" in plan.stale
    assert "parksense/v1/+/+/+/telemetry" in plan.stale


def test_several_workers_take_their_parks_only() -> None:
    """With two workers each holds its own parks' JSON and Sparkplug filters, nothing else."""
    parks = ["a", "b", "c", "d", "e", "f"]
    plans = [subscription_plan(Assignment.PARKS, WorkerSlot(i, 2), parks) for i in (1, 2)]
    for i, plan in enumerate(plans, start=1):
        mine = owned_parks(WorkerSlot(i, 2), parks)
        assert plan.filters == {f for p in mine for f in park_filters(p)}
        assert "parksense/v1/#" in plan.stale
        assert plan.filters.isdisjoint(plan.stale)
    assert plans[0].filters.isdisjoint(plans[1].filters)
    assert plans[0].filters <= plans[1].stale


def test_share_takes_the_root_through_the_group() -> None:
    """Shared: the root filters under $share/{group}/, and the per-park ones are stale."""
    plan = subscription_plan(Assignment.SHARE, WorkerSlot(1, 2), ["a"], share_group="g")
    assert plan.filters == {"$share/g/parksense/v1/#", "$share/g/spBv1.0/#"}
    assert {"parksense/v1/a/#", "parksense/v1/#", "$share/g/parksense/v1/+/+/+/status"} <= (
        plan.stale
    )


def test_share_without_a_group_is_refused() -> None:
    """A shared assignment needs its group."""
    with pytest.raises(ValueError, match="share group"):
        subscription_plan(Assignment.SHARE, WorkerSlot(1, 2), ["a"])


def test_park_filters_cover_the_park_json_and_sparkplug_topics() -> None:
    """A park's filters are everything under its JSON root and its Sparkplug group."""
    assert park_filters("hebi-tech") == ("parksense/v1/hebi-tech/#", "spBv1.0/hebi-tech/#")
