"""API keys over HTTP: create (the secret shown once), list and revoke; admin scope only."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from schemas.access import ApiKeyCreate, ApiKeyCreated, ApiKeys, ApiKeySummary
from schemas.telemetry import ID_PATTERN
from services.api.auth import KeyRing, require_scope
from services.api.deps import PoolDep
from services.api.problems import ProblemError, not_found
from services.core.api_keys import Scope
from services.storage import api_keys

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/keys", tags=["access"], dependencies=[require_scope(Scope.ADMIN)])

KeyNameParam = Annotated[str, Path(pattern=ID_PATTERN, examples=["dashboard"])]


@router.post(
    "",
    summary="Create an API key",
    status_code=201,
    responses={409: {"description": "A key of that name exists"}},
)
async def create_key(body: ApiKeyCreate, pool: PoolDep) -> ApiKeyCreated:
    """Create a key with a scope; the answer holds the key, which is never shown again."""
    async with pool.connection() as conn:
        try:
            issued = await api_keys.acreate_key(conn, body.name, body.scope)
        except api_keys.KeyExistsError as exc:
            raise ProblemError(409, "Key exists", str(exc)) from exc
    logger.info("Created API key %s with scope %s", issued.name, issued.scope.value)
    return ApiKeyCreated(name=issued.name, scope=issued.scope, key=issued.key)


@router.get("", summary="List API keys")
async def list_keys(pool: PoolDep, request: Request) -> ApiKeys:
    """Every stored key with its scope (never its secret), and how many bootstrap keys exist."""
    async with pool.connection() as conn:
        found = await api_keys.alist_keys(conn)
    ring: KeyRing = request.app.state.key_ring
    return ApiKeys(
        data=[ApiKeySummary(name=k.name, scope=k.scope, created_at=k.created_at) for k in found],
        count=len(found),
        bootstrap_keys=ring.count,
    )


@router.delete(
    "/{name}",
    summary="Revoke an API key",
    status_code=204,
    responses={404: {"description": "No key of that name"}},
)
async def revoke_key(name: KeyNameParam, pool: PoolDep) -> Response:
    """Revoke a key at once: its next request gets 401, and its dashboard sessions end."""
    async with pool.connection() as conn:
        if not await api_keys.arevoke_key(conn, name):
            raise not_found("API key", name)
    logger.info("Revoked API key %s", name)
    return Response(status_code=204)
