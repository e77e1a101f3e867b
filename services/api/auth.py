"""Who is calling, and may they: API keys, dashboard sessions, scopes and trusted hosts.

A route (or a whole router) states the scope it needs with a dependency::

    router = APIRouter(prefix="/v1/things", dependencies=[require_scope(Scope.WRITE)])

    @router.get("/x", dependencies=[require_scope(Scope.READ)])

``require_scope`` answers 401 (no or bad credential) or 403 (scope too small) as
problem+json, and the OpenAPI document gains the security schemes and those responses
by itself (``services.api.openapi``). A route that wants the caller takes
``CallerDep``-style parameters: ``caller: Annotated[Principal, require_scope(Scope.ADMIN)]``.

Credentials, in the order they are looked at: ``Authorization: Bearer KEY``,
``X-API-Key: KEY``, the ``parksense_session`` cookie. A key is a bootstrap admin key
(``PARKSENSE_API_API_KEYS``) or a stored key (digest looked up in ``api_keys``). With no
bootstrap key and no stored key the API is open: every caller is an anonymous admin, and
only the trusted-host check stands (``TrustedHostMiddleware``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import psycopg
from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from services.api.problems import ProblemError, send_problem
from services.core.api_keys import Scope, plausible_secret, secret_digest
from services.storage import api_keys

SESSION_COOKIE = "parksense_session"
API_KEY_HEADER = "x-api-key"
# How long a request waits for a pool connection to check its key before a 503.
_POOL_TIMEOUT_S = 5.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="parksense"'}
_T = TypeVar("_T")


class Credential(StrEnum):
    """How the caller proved who they are."""

    BOOTSTRAP = "bootstrap"
    KEY = "key"
    SESSION = "session"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request."""

    name: str
    scope: Scope
    via: Credential
    # When the caller's session ends (sessions only).
    expires_at: datetime | None = None


class KeyRing:
    """The bootstrap admin keys, held as digests and compared in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        """Hash the configured keys; the plain keys are not kept."""
        self._digests = [secret_digest(k) for k in keys if k]

    def __bool__(self) -> bool:
        """True when at least one bootstrap key is configured."""
        return bool(self._digests)

    @property
    def count(self) -> int:
        """How many bootstrap keys are configured."""
        return len(self._digests)

    def match(self, secret: str) -> bytes | None:
        """Return the digest of the bootstrap key equal to ``secret``, or None.

        Every configured digest is compared (``hmac.compare_digest``), so the time taken
        does not tell how much of a guess was right.
        """
        offered = secret_digest(secret)
        found = None
        for digest in self._digests:
            if hmac.compare_digest(offered, digest):
                found = digest
        return found

    def holds(self, digest: bytes) -> bool:
        """Return True when ``digest`` is still a configured bootstrap key."""
        return any(hmac.compare_digest(digest, d) for d in self._digests)


def unauthorized(detail: str) -> ProblemError:
    """Return the 401 problem, with the ``WWW-Authenticate`` challenge."""
    return ProblemError(401, "Unauthorized", detail, headers=_CHALLENGE)


def offered_key(request: Request) -> str | None:
    """Return the key in ``Authorization: Bearer`` or ``X-API-Key``, or None.

    Raises:
        ProblemError: 401, an ``Authorization`` header of another scheme, or a malformed key.
    """
    header = request.headers.get("authorization")
    key: str | None = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header takes the form 'Bearer KEY'")
        key = value.strip()
    else:
        key = request.headers.get(API_KEY_HEADER)
    if key is not None and not plausible_secret(key):
        raise unauthorized("the API key is not valid")
    return key


async def _with_pool(
    request: Request, work: Callable[[psycopg.AsyncConnection], Coroutine[Any, Any, _T]]
) -> _T:
    pool: AsyncConnectionPool = request.app.state.pool
    try:
        async with pool.connection(timeout=_POOL_TIMEOUT_S) as conn:
            return await work(conn)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise ProblemError(
            503, "Service unavailable", "the database is unreachable; cannot check credentials"
        ) from exc


async def api_is_open(request: Request) -> bool:
    """True when no key is configured at all: the API serves every trusted-host caller."""
    ring: KeyRing = request.app.state.key_ring
    return await _open(request, ring)


async def _open(request: Request, ring: KeyRing) -> bool:
    """True when no key is configured at all (no bootstrap key, none stored)."""
    if ring:
        return False
    return not await _with_pool(request, api_keys.akeys_exist)


async def authenticate(request: Request) -> Principal:
    """Return the caller of ``request`` (once per request; kept in ``request.state``).

    Raises:
        ProblemError: 401 without a valid credential (unless the API is open), 503 when
            the database cannot be asked.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = await _resolve(request)
    request.state.principal = principal
    return principal


async def _resolve(request: Request) -> Principal:
    ring: KeyRing = request.app.state.key_ring
    key = offered_key(request)
    if key is not None:
        if ring.match(key) is not None:
            return Principal("bootstrap", Scope.ADMIN, Credential.BOOTSTRAP)
        digest = secret_digest(key)
        found = await _with_pool(request, lambda conn: api_keys.afind_key(conn, digest))
        if found is not None:
            return Principal(found.name, found.scope, Credential.KEY)
        if await _open(request, ring):
            return Principal("anonymous", Scope.ADMIN, Credential.OPEN)
        raise unauthorized("the API key is not valid (revoked, or never issued)")
    token = request.cookies.get(SESSION_COOKIE)
    if token is not None and plausible_secret(token):
        session = await _with_pool(request, lambda conn: api_keys.afind_session(conn, token))
        if session is not None and (
            session.bootstrap_digest is None or ring.holds(session.bootstrap_digest)
        ):
            name = session.key_name or "bootstrap"
            return Principal(name, session.scope, Credential.SESSION, session.expires_at)
    if await _open(request, ring):
        return Principal("anonymous", Scope.ADMIN, Credential.OPEN)
    if token is not None:
        raise unauthorized("the session has expired or was ended; sign in again")
    raise unauthorized(
        "send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY',"
        " or sign in to the dashboard"
    )


# Every dependency made by require_scope, so the OpenAPI document can find the routes that
# need a credential and document their 401 and 403 answers.
SCOPE_DEPENDENCIES: dict[Callable[..., Any], Scope] = {}
_BY_SCOPE: dict[Scope, DependsParam] = {}


def require_scope(scope: Scope) -> DependsParam:
    """Return the dependency that lets only callers with ``scope`` (or a larger one) in.

    Use it in ``dependencies=[...]`` of a router or a route, or as the default of an
    ``Annotated[Principal, ...]`` parameter to get the caller.
    """
    existing = _BY_SCOPE.get(scope)
    if existing is not None:
        return existing

    async def check(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.scope.allows(scope):
            raise ProblemError(
                403,
                "Forbidden",
                f"this needs the {scope.value} scope; the key {principal.name!r} has"
                f" {principal.scope.value}",
                required_scope=scope.value,
            )
        return principal

    check.__name__ = f"require_{scope.value}_scope"
    SCOPE_DEPENDENCIES[check] = scope
    dependency: DependsParam = Depends(check)
    _BY_SCOPE[scope] = dependency
    return dependency


def _host_of(value: str) -> str:
    """Return the host of a ``Host`` header: lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_trusted(host: str, trusted: Iterable[str]) -> bool:
    """Return True when ``host`` (a Host header) matches one of ``trusted``."""
    name = _host_of(host)
    if not name:
        return False
    for pattern in trusted:
        if pattern in {"*", name}:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class TrustedHostMiddleware:
    """Answers 400 problem+json to requests whose ``Host`` header is not trusted.

    A page on another site that re-binds its DNS name to this machine sends its own name
    as ``Host``; refusing it keeps such pages away from an API open on localhost.
    """

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        """Wrap ``app``."""
        self.app = app
        self.trusted = [t.lower() for t in trusted]

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Check the Host of HTTP requests."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"]
        if len(hosts) == 1 and host_trusted(hosts[0], self.trusted):
            await self.app(scope, receive, send)
            return
        await send_problem(
            send,
            400,
            "Untrusted host",
            "the Host header names a host this API does not serve (PARKSENSE_API_TRUSTED_HOSTS)",
            str(scope.get("path", "")),
        )
