"""Fleet (device registry) loading over HTTP: ``PUT /v1/fleet`` with a YAML or JSON body."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import ValidationError

from schemas.api import FleetLoaded
from schemas.fleet import parse_fleet
from services.api.auth import require_scope
from services.api.problems import ProblemError
from services.core.access import Scope
from services.storage.fleet_store import load_fleet

router = APIRouter(prefix="/v1/fleet", tags=["fleet"], dependencies=[require_scope(Scope.WRITE)])

# A fleet of 100,000 devices is about 6 MB of YAML; more than this is a mistake.
_MAX_FLEET_BYTES = 32 * 1024 * 1024

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


@router.put(
    "",
    summary="Replace the fleet",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}, "example": _FLEET_EXAMPLE},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
    responses={422: {"description": "The fleet file is invalid"}},
)
async def put_fleet(request: Request) -> FleetLoaded:
    """Replace the registry with the fleet file in the body (YAML or JSON).

    Devices absent from the file leave the registry; their stored readings stay.
    """
    body = await request.body()
    if len(body) > _MAX_FLEET_BYTES:
        raise ProblemError(413, "Fleet too large", f"limit is {_MAX_FLEET_BYTES} bytes")
    try:
        fleet = parse_fleet(body)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        raise ProblemError(422, "Invalid fleet", detail, errors=errors) from exc
    except ValueError as exc:
        raise ProblemError(422, "Invalid fleet", str(exc)) from exc
    conninfo: str = request.app.state.conninfo
    counts = await asyncio.to_thread(load_fleet, conninfo, fleet)
    return FleetLoaded(
        version=counts.version,
        parks=counts.parks,
        factories=counts.factories,
        devices=counts.devices,
        device_types=counts.device_types,
    )
