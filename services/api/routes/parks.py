"""Parks: the list and one park's factories and devices."""

from __future__ import annotations

from fastapi import APIRouter

from schemas.api import ParkDetail, ParkSummaries
from services.api.deps import ParkId, PoolDep
from services.api.problems import not_found
from services.storage import queries

router = APIRouter(prefix="/v1/parks", tags=["parks"])


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
