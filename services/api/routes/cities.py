"""City signals: a city's parks combined, and the parks ranked by health index."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from schemas.signals import CitySignals, ParkRank
from services.api.auth import require_scope
from services.api.deps import PoolDep, RegistryDep, SettingsDep
from services.api.problems import not_found
from services.api.routes.signals import AsOf, Window, resolve_as_of, resolve_window
from services.core.api_keys import Scope
from services.core.signals import combine_parks
from services.storage import signal_queries
from services.storage.signal_bodies import components, counts, coverage, signal_values

router = APIRouter(prefix="/v1/cities", tags=["signals"], dependencies=[require_scope(Scope.READ)])

City = Annotated[
    str, Path(min_length=1, max_length=200, description="matched ignoring case", examples=["Hebi"])
]


@router.get(
    "/{city}/signals",
    summary="A city's live signals and its parks ranked",
    responses={
        400: {"description": "A parameter is out of range (problem+json)"},
        404: {"description": "No park in that city (problem+json)"},
    },
)
async def city_signals(
    city: City,
    pool: PoolDep,
    registry: RegistryDep,
    settings: SettingsDep,
    as_of: AsOf = None,
    window: Window = None,
) -> CitySignals:
    """The city's signals and its parks ranked by health index (ties by park id).

    Every ratio is recomputed from the parks' summed counts, never averaged.
    """
    instant = resolve_as_of(as_of)
    window_s = resolve_window(window, settings.signal_window_s)
    async with pool.connection() as conn:
        parks = (await registry.current(conn)).city(city)
        if not parks:
            raise not_found("city", city)
        results = await signal_queries.live_signals(
            conn,
            parks,
            as_of=instant,
            window_s=window_s,
            online_timeout_s=settings.online_timeout_s,
        )
    combined = combine_parks(results, as_of=instant, window_s=window_s)
    ranked = sorted(
        zip(parks, results, strict=True),
        key=lambda pr: (-pr[1].signals.health_index, pr[0].park_id),
    )
    return CitySignals(
        city=parks[0].city,
        as_of=instant,
        window_s=window_s,
        online_timeout_s=settings.online_timeout_s,
        parks=len(parks),
        signals=signal_values(combined.signals),
        counts=counts(combined.counts),
        components=components(combined.signals),
        coverage=coverage(combined.coverage),
        ranking=[
            ParkRank(
                rank=rank,
                park_id=park.park_id,
                name=park.name,
                health_index=result.signals.health_index,
                signals=signal_values(result.signals),
                counts=counts(result.counts),
            )
            for rank, (park, result) in enumerate(ranked, start=1)
        ],
    )
