"""The body of ``GET /v1/parks/{park_id}/signals``, built once for every way it is shared.

The route, the live stream (``services.api.stream.poller``) and the MQTT publisher
(``services.maintenance.sharing``) all answer with what ``park_signals_body`` builds, so
a park's signals read the same over HTTP, SSE and MQTT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from psycopg import AsyncConnection

from schemas import signals as out
from services.core import signals as core
from services.core.registry import ParkInfo
from services.storage import signal_queries


def signal_values(values: core.SignalValues) -> out.SignalValues:
    """Convert the core's signals to the API model."""
    return out.SignalValues(
        online_rate=values.online_rate,
        operating_rate=values.operating_rate,
        capacity_utilization=values.capacity_utilization,
        power_kw=values.power_kw,
        energy_kwh=values.energy_kwh,
        energy_intensity_kwh_per_unit=values.energy_intensity_kwh_per_unit,
        alarm_rate=values.alarm_rate,
        health_index=values.health_index,
    )


def components(values: core.SignalValues) -> dict[str, out.HealthComponent]:
    """Convert the health-index components."""
    return {
        name: out.HealthComponent(weight=c.weight, value=c.value, points=c.points)
        for name, c in values.components.items()
    }


def coverage(found: Mapping[core.Signal, core.Coverage]) -> dict[str, out.Coverage]:
    """Convert per-signal coverage."""
    return {
        signal.value: out.Coverage(devices=c.devices, reporting=c.reporting, share=c.share)
        for signal, c in found.items()
    }


def counts(found: core.ParkCounts) -> out.SignalCounts:
    """Convert the counts behind the ratios."""
    return out.SignalCounts(
        **{name: getattr(found, name) for name in out.SignalCounts.model_fields}
    )


def alarm(found: core.Alarm) -> out.Alarm:
    """Convert one alarm."""
    return out.Alarm(
        device_id=found.device_id,
        factory_id=found.factory_id,
        metric=found.metric,
        reason=found.reason.value,
        ts=found.ts,
        value=found.value,
        text=found.text,
        threshold=found.threshold,
    )


def park_signals_body(
    park: ParkInfo,
    result: core.ParkSignals,
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> out.ParkSignals:
    """Return the park's signals as ``GET /v1/parks/{park_id}/signals`` answers them."""
    return out.ParkSignals(
        park_id=park.park_id,
        name=park.name,
        city=park.city,
        as_of=as_of,
        window_s=window_s,
        online_timeout_s=online_timeout_s,
        signals=signal_values(result.signals),
        counts=counts(result.counts),
        components=components(result.signals),
        coverage=coverage(result.coverage),
        alarms=[alarm(a) for a in result.alarms],
    )


async def live_bodies(
    conn: AsyncConnection,
    parks: Sequence[ParkInfo],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> list[out.ParkSignals]:
    """Compute the live signals of ``parks`` (one query for all) and build each one's body."""
    results = await signal_queries.live_signals(
        conn, parks, as_of=as_of, window_s=window_s, online_timeout_s=online_timeout_s
    )
    return [
        park_signals_body(
            park, result, as_of=as_of, window_s=window_s, online_timeout_s=online_timeout_s
        )
        for park, result in zip(parks, results, strict=True)
    ]
