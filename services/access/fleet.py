"""Fleet loads that are in force at the broker when they return."""

from __future__ import annotations

from schemas.fleet import Fleet
from services.access.sync import BrokerSync
from services.storage.fleet_store import FleetCounts, load_fleet


def load_fleet_in_force(conninfo: str, fleet: Fleet, broker: BrokerSync) -> FleetCounts:
    """Load ``fleet`` and put its devices' and gateways' topic grants in force.

    A gateway publishes for every device of its factory, and a device's credential works
    while the device is registered, so each load re-renders the broker's grants.

    Raises:
        BrokerReloadError: Loaded, but the broker did not confirm the new grants.
    """
    counts = load_fleet(conninfo, fleet)
    broker.sync(conninfo)
    return counts
