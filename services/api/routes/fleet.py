"""The fleet (device registry) over HTTP: ``PUT /v1/fleet`` loads it, ``GET`` answers it back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from schemas.api import FleetLoaded
from schemas.fleet_text import FleetLimits
from services.access.errors import BrokerReloadError
from services.access.sync import BrokerSync
from services.api.auth import require_scope
from services.api.deps import SettingsDep
from services.api.fleet_worker import FleetWorkers
from services.api.problems import ProblemError
from services.core.api_keys import Scope
from services.core.media import negotiate


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    workers = FleetWorkers()
    app.state.fleet_workers = workers
    try:
        yield
    finally:
        workers.close()


router = APIRouter(prefix="/v1/fleet", tags=["fleet"], lifespan=_lifespan)

YAML = "application/yaml"
JSON = "application/json"
# The fleet file's own format first: what ``GET`` answers when Accept allows anything.
_OFFERED = (YAML, JSON, "text/yaml")

_FLEET_EXAMPLE = """parks:
  - id: hebi-tech
    name: Hebi Digital Economy Park
    city: Hebi
    factories:
      - id: f01
        name: Precision Parts
        industry: smart-manufacturing
        devices:
          - {id: f01-meter-1, type: power_meter}
          - {id: f01-line-1, type: production_line, capacity_units_per_hour: 1200}
"""


@router.get(
    "",
    summary="The fleet as loaded",
    dependencies=[require_scope(Scope.READ)],
    response_class=Response,
    responses={
        200: {
            "description": "The fleet file (YAML by default; JSON with `Accept: application/json`)",
            "content": {
                YAML: {"schema": {"type": "string"}, "example": _FLEET_EXAMPLE},
                JSON: {"schema": {"type": "object"}},
                "text/yaml": {"schema": {"type": "string"}},
            },
        },
        406: {"description": "The Accept header takes neither YAML nor JSON"},
        503: {"description": "The database is unreachable, or the export worker failed"},
    },
)
async def get_fleet(request: Request) -> Response:
    """The registry as loaded, as a fleet file.

    Parks, factories, devices with their own thresholds, and the device types the fleet
    adds to (or changes of) the built-in ones. ``PUT`` of this answer loads the same
    registry, so ``GET`` → ``PUT`` → ``GET`` gives the same text. Read in one snapshot, so
    a load running meanwhile is seen whole or not at all.
    """
    chosen = negotiate(request.headers.get("accept"), _OFFERED)
    if chosen is None:
        raise ProblemError(406, "Not Acceptable", f"the fleet is served as {YAML} or {JSON}")
    workers: FleetWorkers = request.app.state.fleet_workers
    try:
        body = await workers.export(request.app.state.conninfo, as_json=chosen == JSON)
    except BrokenProcessPool as exc:
        raise ProblemError(503, "Fleet worker failed", "the export did not finish; retry") from exc
    return Response(body, media_type=chosen)


@router.put(
    "",
    summary="Replace the fleet",
    dependencies=[require_scope(Scope.WRITE)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}, "example": _FLEET_EXAMPLE},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
    responses={
        413: {"description": "The fleet file is over the size or node limit"},
        422: {"description": "The fleet file is invalid, or uses YAML aliases or anchors"},
    },
)
async def put_fleet(request: Request, settings: SettingsDep) -> FleetLoaded:
    """Replace the registry with the fleet file in the body (YAML or JSON).

    Devices absent from the file leave the registry; their stored readings stay. YAML
    aliases and anchors are refused; the body may hold at most
    ``PARKSENSE_API_FLEET_MAX_BYTES`` bytes and ``PARKSENSE_API_FLEET_MAX_NODES`` nodes.
    Uploads are parsed, validated and written in worker processes (two at a time), so
    the API keeps answering (and streaming) while a large fleet loads.
    """
    limits = FleetLimits(max_bytes=settings.fleet_max_bytes, max_nodes=settings.fleet_max_nodes)
    body = await _read_body(request, limits.max_bytes)
    workers: FleetWorkers = request.app.state.fleet_workers
    try:
        outcome = await workers.run(body, limits, request.app.state.conninfo)
    except BrokenProcessPool as exc:
        raise ProblemError(503, "Fleet worker failed", "the upload was not loaded; retry") from exc
    counts = outcome.counts
    if counts is None:
        raise ProblemError(outcome.status, outcome.title, outcome.detail, **outcome.extra)
    # A gateway's grants follow its factory's devices: in force at the broker on return.
    broker: BrokerSync = request.app.state.broker_sync
    try:
        await asyncio.to_thread(broker.sync, request.app.state.conninfo)
    except BrokerReloadError as exc:
        raise ProblemError(503, "Broker did not reload", str(exc)) from exc
    return FleetLoaded(
        version=counts.version,
        parks=counts.parks,
        factories=counts.factories,
        devices=counts.devices,
        device_types=counts.device_types,
    )


def _too_large(detail: str) -> ProblemError:
    return ProblemError(413, "Fleet too large", detail)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing it as soon as it is over ``max_bytes`` (413)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
