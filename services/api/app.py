"""The FastAPI application: ``create_app(settings)`` with a pool opened by its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from psycopg_pool import AsyncConnectionPool

from services.access.sync import BrokerSync
from services.api import openapi, problems
from services.api.auth import API_KEY_HEADER, KeyRing, TrustedHostMiddleware
from services.api.guards import InputGuardMiddleware
from services.api.routes import ROUTERS
from services.config import ApiSettings, BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.storage.registry import RegistryCache

_DESCRIPTION = """Industry state, sensed on one network.

Park industry-health signals, device readings and delivery accounting over TimescaleDB.
Times are RFC 3339 UTC; errors are `application/problem+json`.
"""


def create_app(
    settings: ApiSettings,
    database: DatabaseSettings,
    broker_sync: BrokerSync | None = None,
) -> FastAPI:
    """Build the API for one database; it runs no background jobs (``services.maintenance`` does).

    Args:
        settings: The API's own settings.
        database: Where the database is.
        broker_sync: Puts credential and registry changes in force at a broker that reads
            files (the local Mosquitto); None when the broker reads the database itself.
    """
    conninfo = database.conninfo(application_name="parksense-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            conninfo,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            open=False,
            kwargs={"autocommit": True},
        )
        # Not waiting: the API starts while the database is away, and /readyz says so.
        await pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="parksense API",
        version="1.0.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.conninfo = conninfo
    app.state.broker_sync = broker_sync or BrokerSync(BrokerAuthSettings(), MqttSettings())
    app.state.key_ring = KeyRing(settings.key_list())
    app.state.registry = RegistryCache()
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    openapi.install(app)
    origins = settings.cors_origin_list()
    if origins:
        # Keys travel in headers, never cookies, across origins: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "PUT", "POST", "DELETE"],
            allow_headers=["Authorization", API_KEY_HEADER, "Content-Type", "Last-Event-ID"],
        )
    app.add_middleware(InputGuardMiddleware)
    # Added last, so it runs first: an untrusted Host is refused before anything else.
    app.add_middleware(TrustedHostMiddleware, trusted=settings.trusted_host_list())
    return app
