"""The consumer's subscription bookkeeping: what to send, and when a version is subscribed."""

from __future__ import annotations

from services.config import IngestSettings
from services.core.assignment import WorkerSlot, factory_filters, owned_factories
from services.ingest.subscriptions import Subscriptions

SETTINGS = IngestSettings(workers=2, worker_index=1)
FACTORIES = [("p", f"f{i}") for i in range(8)]
MINE = owned_factories(WorkerSlot(1, 2), FACTORIES)
MY_FILTERS = {f for k in MINE for f in factory_filters(k)}


def test_a_connection_subscribes_to_every_filter_then_drops_the_others() -> None:
    """On connect: this worker's filters first, then the others' and the root's go."""
    changes = Subscriptions(SETTINGS, FACTORIES, 1).connected()
    assert changes.subscribe == MY_FILTERS
    assert "parksense/v1/#" in changes.unsubscribe
    assert changes.subscribe.isdisjoint(changes.unsubscribe)


def test_the_version_is_subscribed_only_once_every_suback_is_in() -> None:
    """subscribed_version moves when the last awaited SUBACK arrives, and is announced once."""
    subscriptions = Subscriptions(SETTINGS, FACTORIES, 1)
    subscriptions.connected()
    subscriptions.sent(7)
    subscriptions.sent(8)
    assert subscriptions.settle() is False
    assert subscriptions.answered(7) is False
    assert subscriptions.subscribed_version == 0
    assert subscriptions.answered(8) is True
    assert subscriptions.subscribed_version == 1
    assert subscriptions.settle() is False  # announced already


def test_a_new_factory_of_its_own_is_added_and_a_removed_one_dropped() -> None:
    """A registry change sends only the difference, and its version settles after the SUBACK."""
    subscriptions = Subscriptions(SETTINGS, FACTORIES, 1)
    subscriptions.connected()
    subscriptions.settle()
    mine_new = next(
        k
        for k in (("q", f"g{i}") for i in range(50))
        if k in owned_factories(WorkerSlot(1, 2), [k])
    )
    gone = min(MINE)
    changes = subscriptions.assign([*(k for k in FACTORIES if k != gone), mine_new], 2)
    assert changes.subscribe == set(factory_filters(mine_new))
    assert changes.unsubscribe == set(factory_filters(gone))
    subscriptions.sent(9)
    assert subscriptions.subscribed_version == 1
    subscriptions.answered(9)
    assert subscriptions.subscribed_version == 2


def test_nothing_is_sent_while_disconnected() -> None:
    """A change while the connection is down waits for the next connection's full set."""
    subscriptions = Subscriptions(SETTINGS, FACTORIES, 1)
    subscriptions.connected()
    subscriptions.disconnected()
    changes = subscriptions.assign(FACTORIES[:2], 2)
    assert (changes.subscribe, changes.unsubscribe) == (frozenset(), frozenset())
    assert subscriptions.settle() is False
    assert subscriptions.subscribed_version == 0
