"""Route modules; ``ROUTERS`` lists what ``create_app`` mounts."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.routes import (
    cities,
    credentials,
    dashboard,
    dead_letters,
    devices,
    fleet,
    health,
    keys,
    parks,
    session,
    signals,
    stream,
)

ROUTERS: list[APIRouter] = [
    health.router,
    parks.router,
    devices.router,
    fleet.router,
    credentials.router,
    dead_letters.router,
    signals.router,
    cities.router,
    stream.router,
    keys.router,
    session.router,
    dashboard.router,
]
