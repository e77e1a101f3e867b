"""Liveness and readiness."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from schemas.api import Health
from services.api.deps import PoolDep
from services.storage.heartbeat import worker_health

router = APIRouter(tags=["operations"])

# An ingest worker that has not reported for this long is counted as stale.
_STALE_AFTER_S = 10


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"model": Health, "description": "The database is unreachable"}},
)
async def readyz(pool: PoolDep) -> JSONResponse:
    """Ready when the database answers; ``degraded`` when an ingest worker is stale or degraded."""
    checks: dict[str, str] = {}
    try:
        async with pool.connection(timeout=2) as conn:
            workers = await worker_health(conn, _STALE_AFTER_S)
    except (psycopg.Error, TimeoutError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        body = Health(status="unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=503)
    checks["database"] = "ok"
    status = "ready"
    for worker in workers:
        state = "stale" if worker.stale else ("degraded" if worker.degraded else "ok")
        checks[f"ingest:{worker.client_id}"] = state
        if state != "ok":
            status = "degraded"
    if not workers:
        checks["ingest"] = "no worker has reported"
    return JSONResponse(Health(status=status, checks=checks).model_dump())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics() -> Response:
    """The process's metrics in the Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
