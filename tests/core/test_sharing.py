"""When park signals are republished: on alarm changes and on the period, per park."""

from __future__ import annotations

import pytest

from services.core.sharing import ShareSchedule

NONE: frozenset[str] = frozenset()


def test_a_park_is_due_first_then_on_its_period() -> None:
    """Never published: due; then due again only once the period has passed."""
    schedule = ShareSchedule(republish_s=5)
    assert schedule.due("p1", NONE, now_s=100)
    schedule.published("p1", NONE, now_s=100)
    assert not schedule.due("p1", NONE, now_s=104.9)
    assert schedule.due("p1", NONE, now_s=105)


def test_a_device_entering_or_leaving_alarm_makes_its_park_due_at_once() -> None:
    """A change of the set of devices in alarm is due whatever the period says."""
    schedule = ShareSchedule(republish_s=5)
    schedule.published("p1", NONE, now_s=0)
    schedule.published("p2", NONE, now_s=0)
    assert schedule.due("p1", frozenset({"d1"}), now_s=1)
    assert not schedule.due("p2", NONE, now_s=1)
    schedule.published("p1", frozenset({"d1"}), now_s=1)
    assert not schedule.due("p1", frozenset({"d1"}), now_s=2)
    assert schedule.due("p1", NONE, now_s=2)


def test_parks_gone_from_the_registry_are_returned_once_and_reset_forgets_all() -> None:
    """``gone`` names each published park no longer present, once; ``reset`` starts over."""
    schedule = ShareSchedule(republish_s=5)
    for park in ("p1", "p2", "p3"):
        schedule.published(park, NONE, now_s=0)
    assert schedule.gone(["p2"]) == ["p1", "p3"]
    assert schedule.gone(["p2"]) == []
    schedule.reset()
    assert schedule.due("p2", NONE, now_s=1)


def test_the_period_must_be_positive() -> None:
    """A zero period would republish on every check; it is refused."""
    with pytest.raises(ValueError, match="positive"):
        ShareSchedule(republish_s=0)
