"""Dashboard sessions: sign in with a key for an HttpOnly cookie, see who you are, sign out.

The cookie holds a random session token (only its digest is stored) and is ``HttpOnly``
(scripts cannot read it) and ``SameSite=Strict`` (other sites cannot make the browser send
it). A session reads: it carries at most the ``read`` scope, whatever the key's scope, so
a page that fools the browser into a request cannot change anything. The key itself is
sent once, in the body of the sign-in request, never in a URL.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request, Response

from schemas.access import SessionCreate, SessionInfo
from services.api.auth import (
    SESSION_COOKIE,
    Credential,
    KeyRing,
    Principal,
    api_is_open,
    require_scope,
    unauthorized,
)
from services.api.deps import PoolDep, SettingsDep
from services.core.api_keys import Scope, plausible_secret, secret_digest
from services.storage import api_keys

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/session", tags=["access"])

# The most a session may do; see the module docstring.
SESSION_SCOPE = Scope.READ


def _cap(scope: Scope) -> Scope:
    return scope if SESSION_SCOPE.allows(scope) else SESSION_SCOPE


@router.post(
    "",
    summary="Sign in (exchange a key for a session cookie)",
    status_code=201,
    responses={
        201: {
            "headers": {
                "Set-Cookie": {
                    "description": f"{SESSION_COOKIE}=TOKEN; HttpOnly; SameSite=Strict; Path=/",
                    "schema": {"type": "string"},
                }
            }
        },
        401: {"description": "The key is not valid"},
    },
)
async def sign_in(
    body: SessionCreate, request: Request, response: Response, pool: PoolDep, settings: SettingsDep
) -> SessionInfo:
    """Check the key and set the ``parksense_session`` cookie (HttpOnly, SameSite=Strict).

    The session may read (every GET under ``/v1`` and the live stream) until it expires
    or the key is revoked; writing needs the key itself in a header.
    """
    ring: KeyRing = request.app.state.key_ring
    if not plausible_secret(body.key):
        raise unauthorized("the API key is not valid")
    bootstrap = ring.match(body.key)
    async with pool.connection() as conn:
        if bootstrap is not None:
            name, scope = "bootstrap", Scope.ADMIN
        else:
            found = await api_keys.afind_key(conn, secret_digest(body.key))
            if found is None:
                raise unauthorized("the API key is not valid (revoked, or never issued)")
            name, scope = found.name, found.scope
        token = api_keys.new_session_token()
        expires_at = await api_keys.acreate_session(
            conn,
            token=token,
            key_name=None if bootstrap is not None else name,
            bootstrap_digest=bootstrap,
            scope=_cap(scope),
            ttl=timedelta(seconds=settings.session_ttl_s),
        )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_s,
        path="/",
        secure=settings.session_cookie_secure or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    logger.info("Signed in a dashboard session with key %s", name)
    return SessionInfo(
        name=name,
        scope=_cap(scope),
        via=Credential.SESSION.value,
        expires_at=expires_at,
        keys_required=True,
    )


@router.get("", summary="Who am I")
async def whoami(
    caller: Annotated[Principal, require_scope(Scope.READ)], request: Request
) -> SessionInfo:
    """The caller's key name and scope, and when its session ends; the dashboard asks first."""
    return SessionInfo(
        name=caller.name,
        scope=caller.scope,
        via=caller.via.value,
        expires_at=caller.expires_at,
        keys_required=caller.via is not Credential.OPEN or not await api_is_open(request),
    )


@router.delete("", summary="Sign out", status_code=204)
async def sign_out(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """End the session of the cookie (if any) and clear the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is not None and plausible_secret(token):
        async with pool.connection() as conn:
            await api_keys.adelete_session(conn, token)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=settings.session_cookie_secure or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
