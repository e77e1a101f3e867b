"""API keys and dashboard sessions in PostgreSQL, stored as SHA-256 digests only.

The CLI uses the synchronous functions, the API the ``a``-prefixed asynchronous ones; both
run the same SQL. Secrets are made here (``secrets``), shown once by the caller, and never
stored or logged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from services.core.api_keys import (
    KEY_PREFIX,
    SECRET_BYTES,
    SESSION_PREFIX,
    Scope,
    secret_digest,
)
from services.storage.errors import StorageError


class KeyExistsError(StorageError):
    """A key with that name exists already."""

    def __init__(self, name: str) -> None:
        """Name the key."""
        super().__init__(f"an API key named {name!r} exists already", sqlstate="23505")
        self.name = name


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key, without its secret."""

    name: str
    scope: Scope
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the only time its secret is known."""

    name: str
    scope: Scope
    key: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live dashboard session."""

    key_name: str | None
    bootstrap_digest: bytes | None
    scope: Scope
    expires_at: datetime


def new_key() -> str:
    """Return a fresh API key (256 random bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_session_token() -> str:
    """Return a fresh session token (256 random bits, URL-safe)."""
    return SESSION_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


_INSERT_KEY = "INSERT INTO api_keys (name, scope, key_digest) VALUES (%s, %s, %s)"
_LIST_KEYS = "SELECT name, scope, created_at FROM api_keys ORDER BY name"
_DELETE_KEY = "DELETE FROM api_keys WHERE name = %s"
_FIND_KEY = "SELECT name, scope, created_at, key_digest FROM api_keys WHERE key_digest = %s"
_ANY_KEY = "SELECT EXISTS (SELECT 1 FROM api_keys)"
_INSERT_SESSION = (
    "INSERT INTO api_sessions (token_digest, key_name, bootstrap_digest, scope, expires_at)"
    " VALUES (%s, %s, %s, %s, now() + %s) RETURNING expires_at"
)
# Expired sessions are deleted whenever a new one is made, so the table stays small.
_PURGE_SESSIONS = "DELETE FROM api_sessions WHERE expires_at <= now()"
_FIND_SESSION = (
    "SELECT key_name, bootstrap_digest, scope, expires_at FROM api_sessions"
    " WHERE token_digest = %s AND expires_at > now()"
)
_DELETE_SESSION = "DELETE FROM api_sessions WHERE token_digest = %s"


def _key_info(row: tuple[object, ...]) -> KeyInfo:
    name, scope, created_at = row[0], row[1], row[2]
    assert isinstance(created_at, datetime)  # noqa: S101 - timestamptz column
    return KeyInfo(name=str(name), scope=Scope(str(scope)), created_at=created_at)


# -- synchronous (CLI) ----------------------------------------------------------------


def create_key(conn: psycopg.Connection, name: str, scope: Scope) -> IssuedKey:
    """Store a new key and return it with its secret (shown once).

    Raises:
        KeyExistsError: the name is taken.
    """
    key = new_key()
    try:
        with conn.transaction():
            conn.execute(_INSERT_KEY, (name, scope.value, secret_digest(key)))
    except psycopg.errors.UniqueViolation as exc:
        raise KeyExistsError(name) from exc
    return IssuedKey(name=name, scope=scope, key=key)


def list_keys(conn: psycopg.Connection) -> list[KeyInfo]:
    """Return every stored key, by name."""
    return [_key_info(row) for row in conn.execute(_LIST_KEYS).fetchall()]


def revoke_key(conn: psycopg.Connection, name: str) -> bool:
    """Delete a key and its sessions; return False when there was none of that name."""
    with conn.transaction():
        cur = conn.execute(_DELETE_KEY, (name,))
    return cur.rowcount > 0


def keys_exist(conn: psycopg.Connection) -> bool:
    """Return True when at least one key is stored."""
    row = conn.execute(_ANY_KEY).fetchone()
    return bool(row and row[0])


# -- asynchronous (API) ---------------------------------------------------------------


async def acreate_key(conn: psycopg.AsyncConnection, name: str, scope: Scope) -> IssuedKey:
    """Store a new key; see :func:`create_key`."""
    key = new_key()
    try:
        async with conn.transaction():
            await conn.execute(_INSERT_KEY, (name, scope.value, secret_digest(key)))
    except psycopg.errors.UniqueViolation as exc:
        raise KeyExistsError(name) from exc
    return IssuedKey(name=name, scope=scope, key=key)


async def alist_keys(conn: psycopg.AsyncConnection) -> list[KeyInfo]:
    """Return every stored key, by name."""
    cur = await conn.execute(_LIST_KEYS)
    return [_key_info(row) for row in await cur.fetchall()]


async def arevoke_key(conn: psycopg.AsyncConnection, name: str) -> bool:
    """Delete a key and its sessions; return False when there was none of that name."""
    async with conn.transaction():
        cur = await conn.execute(_DELETE_KEY, (name,))
    return cur.rowcount > 0


async def akeys_exist(conn: psycopg.AsyncConnection) -> bool:
    """Return True when at least one key is stored."""
    cur = await conn.execute(_ANY_KEY)
    row = await cur.fetchone()
    return bool(row and row[0])


async def afind_key(conn: psycopg.AsyncConnection, digest: bytes) -> KeyInfo | None:
    """Return the stored key with this digest, or None."""
    cur = await conn.execute(_FIND_KEY, (digest,))
    row = await cur.fetchone()
    return None if row is None else _key_info(row)


async def acreate_session(
    conn: psycopg.AsyncConnection,
    *,
    token: str,
    key_name: str | None,
    bootstrap_digest: bytes | None,
    scope: Scope,
    ttl: timedelta,
) -> datetime:
    """Store a session for ``token``; return when it expires."""
    async with conn.transaction():
        await conn.execute(_PURGE_SESSIONS)
        cur = await conn.execute(
            _INSERT_SESSION, (secret_digest(token), key_name, bootstrap_digest, scope.value, ttl)
        )
        row = await cur.fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    expires_at: datetime = row[0]
    return expires_at


async def afind_session(conn: psycopg.AsyncConnection, token: str) -> SessionInfo | None:
    """Return the live session of ``token``, or None (unknown or expired)."""
    cur = await conn.execute(_FIND_SESSION, (secret_digest(token),))
    row = await cur.fetchone()
    if row is None:
        return None
    key_name, bootstrap, scope, expires_at = row
    return SessionInfo(
        key_name=key_name,
        bootstrap_digest=None if bootstrap is None else bytes(bootstrap),
        scope=Scope(scope),
        expires_at=expires_at,
    )


async def adelete_session(conn: psycopg.AsyncConnection, token: str) -> None:
    """End the session of ``token`` (nothing happens when there is none)."""
    await conn.execute(_DELETE_SESSION, (secret_digest(token),))
