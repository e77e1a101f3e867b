"""Dependencies shared by the routes: the connection pool, settings and common parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BeforeValidator, PlainValidator, WithJsonSchema

from schemas.telemetry import ID_PATTERN
from services.config import ApiSettings
from services.core.aggregates import Agg
from services.storage import device_readings, history_queries
from services.storage.registry import RegistryCache


def get_pool(request: Request) -> AsyncConnectionPool:
    """Return the app's connection pool (opened by the lifespan)."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> ApiSettings:
    """Return the app's settings."""
    settings: ApiSettings = request.app.state.settings
    return settings


def get_registry(request: Request) -> RegistryCache:
    """Return the app's registry (read again when a fleet load moves it)."""
    registry: RegistryCache = request.app.state.registry
    return registry


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RegistryDep = Annotated[RegistryCache, Depends(get_registry)]
ParkId = Annotated[str, Path(pattern=ID_PATTERN, examples=["hebi-tech"])]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, examples=["f01-meter-1"])]
FactoryId = Annotated[str, Path(pattern=ID_PATTERN, examples=["f01"])]


# RFC 3339 with an offset, ASCII digits only: a bare number (an epoch, which pydantic would
# take), a date alone, or a time without an offset are refused as malformed (422).
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and _RFC3339.match(value) is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-11-26T10:00:00Z")
    return value


Rfc3339 = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]


def _accept(offered: Sequence[Agg]) -> Callable[[object], Agg]:
    """A validator taking only the aggregates a resource offers (others: 422)."""
    by_name = {agg.value: agg for agg in offered}
    expected = ", ".join(repr(name) for name in by_name)

    def parse(value: object) -> Agg:
        found = by_name.get(value) if isinstance(value, str) else None
        if found is None:
            raise ValueError(f"Input should be one of {expected}")
        return found

    return parse


def _listed(offered: Sequence[Agg]) -> dict[str, Any]:
    """The OpenAPI schema of an aggregate parameter: the offered names only."""
    return {"type": "string", "enum": [agg.value for agg in offered]}


# The aggregate of a device's readings, and of a park metric: one Agg vocabulary
# (services/core/aggregates.py), each parameter taking what its storage query computes.
ReadingAgg = Annotated[
    Agg,
    PlainValidator(_accept(device_readings.AGGS)),
    WithJsonSchema(_listed(device_readings.AGGS)),
]
MetricAgg = Annotated[
    Agg,
    PlainValidator(_accept(history_queries.METRIC_AGGS)),
    WithJsonSchema(_listed(history_queries.METRIC_AGGS)),
]
