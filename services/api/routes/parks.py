"""Parks: the list and one park's factories and devices."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from schemas.api import ParkDelivery, ParkDetail, ParkSummaries
from services.api.auth import require_scope
from services.api.deps import ParkId, PoolDep, Rfc3339
from services.api.problems import not_found, time_range
from services.core.api_keys import Scope
from services.storage import queries

router = APIRouter(prefix="/v1/parks", tags=["parks"], dependencies=[require_scope(Scope.READ)])


@router.get("", summary="List parks")
async def list_parks(pool: PoolDep) -> ParkSummaries:
    """Every park with its number of factories and devices."""
    async with pool.connection() as conn:
        parks = await queries.list_parks(conn)
    return ParkSummaries(data=parks, count=len(parks))


@router.get("/{park_id}", summary="One park", responses={404: {"description": "Unknown park"}})
async def get_park(park_id: ParkId, pool: PoolDep) -> ParkDetail:
    """A park with its factories and their devices."""
    async with pool.connection() as conn:
        park = await queries.get_park(conn, park_id)
    if park is None:
        raise not_found("park", park_id)
    return park


@router.get(
    "/{park_id}/delivery",
    summary="Delivery accounting of a park",
    responses={404: {"description": "Unknown park"}, 400: {"description": "Bad interval"}},
)
async def park_delivery(
    park_id: ParkId,
    pool: PoolDep,
    start: Annotated[Rfc3339 | None, Query(description="inclusive; default end - 1 h")] = None,
    end: Annotated[Rfc3339 | None, Query(description="exclusive; default now")] = None,
) -> ParkDelivery:
    """What arrived for the park, what was stored, what was refused and which devices were silent.

    Accepted and stored counts are kept per minute of receipt, so the interval is taken
    to whole minutes; refusals and silent devices use the exact interval. A dip in a
    signal with every device reporting is real; one with silent devices is missing data.
    """
    start_ts, end_ts = time_range(start, end, default_span=timedelta(hours=1))
    async with pool.connection() as conn:
        if not await queries.park_exists(conn, park_id):
            raise not_found("park", park_id)
        counts = await queries.park_delivery(conn, park_id, start_ts, end_ts)
    return ParkDelivery(
        park_id=park_id,
        start=start_ts,
        end=end_ts,
        readings_accepted=counts.accepted,
        readings_stored=counts.stored,
        duplicates=counts.accepted - counts.stored,
        refused=counts.refused,
        refused_total=sum(counts.refused.values()),
        devices_registered=counts.devices_registered,
        devices_reporting=counts.devices_reporting,
        silent_devices=counts.silent_devices,
    )
