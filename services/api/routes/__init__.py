"""Route modules; ``ROUTERS`` lists what ``create_app`` mounts."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.routes import dead_letters, devices, fleet, health, parks

ROUTERS: list[APIRouter] = [
    health.router,
    parks.router,
    devices.router,
    fleet.router,
    dead_letters.router,
]
