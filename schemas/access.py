"""API models of access: keys, sessions and problem documents."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.telemetry import ID_PATTERN

# A key or session token longer than this is refused before hashing.
MAX_SECRET_CHARS = 256


class Scope(StrEnum):
    """What a key may do; each scope includes the ones before it (read ⊂ write ⊂ admin)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the order read < write < admin."""
        return _RANK[self]

    def allows(self, required: Scope) -> bool:
        """Return True when this scope includes ``required``."""
        return self.rank >= required.rank


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}

KeyName = Annotated[
    str, Field(pattern=ID_PATTERN, description="unique key name", examples=["dashboard"])
]


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ApiKeyCreate(_In):
    """A key to create."""

    name: KeyName
    scope: Scope = Field(description="read ⊂ write ⊂ admin")


class ApiKeyCreated(_Out):
    """A key just created; ``key`` is shown this once and stored only as a digest."""

    name: str
    scope: Scope
    key: str = Field(description="the secret: send it as 'Authorization: Bearer KEY'")


class ApiKeySummary(_Out):
    """A stored key, without its secret."""

    name: str
    scope: Scope
    created_at: datetime


class ApiKeys(_Out):
    """The stored keys (bootstrap keys from the environment are counted, not listed)."""

    data: list[ApiKeySummary]
    count: int
    bootstrap_keys: int = Field(description="admin keys from PARKSENSE_API_API_KEYS")


class SessionCreate(_In):
    """Sign in: exchange a key for a session cookie."""

    key: str = Field(min_length=1, max_length=MAX_SECRET_CHARS, description="an API key")


class SessionInfo(_Out):
    """Who the caller is and how they signed in."""

    name: str = Field(description="the key's name ('bootstrap' or 'anonymous' for those)")
    scope: Scope
    via: str = Field(description="bootstrap, key, session or open (no key configured)")
    expires_at: datetime | None = Field(default=None, description="when a session ends")
    keys_required: bool = Field(description="false when the API is open (no key configured)")


class Problem(BaseModel):
    """An error (RFC 9457 problem details), served as ``application/problem+json``."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str = ""
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors (422), each with loc and msg"
    )
