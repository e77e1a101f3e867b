"""Dependencies shared by the routes: the connection pool, settings and common parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from psycopg_pool import AsyncConnectionPool

from schemas.telemetry import ID_PATTERN
from services.config import ApiSettings


def get_pool(request: Request) -> AsyncConnectionPool:
    """Return the app's connection pool (opened by the lifespan)."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> ApiSettings:
    """Return the app's settings."""
    settings: ApiSettings = request.app.state.settings
    return settings


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
ParkId = Annotated[str, Path(pattern=ID_PATTERN, examples=["hebi-tech"])]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, examples=["f01-meter-1"])]
FactoryId = Annotated[str, Path(pattern=ID_PATTERN, examples=["f01"])]
