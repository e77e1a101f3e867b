"""Dead letters: every refused reading or message, with its reason and raw payload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from schemas.api import DeadLetters
from services.api.auth import require_scope
from services.api.deps import PoolDep, Rfc3339
from services.core.api_keys import Scope
from services.core.readings import RejectReason
from services.storage import queries

router = APIRouter(
    prefix="/v1/dead-letters", tags=["delivery"], dependencies=[require_scope(Scope.READ)]
)


@router.get("", summary="List dead letters")
async def list_dead_letters(
    pool: PoolDep,
    reason: Annotated[RejectReason | None, Query()] = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    park: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[Rfc3339 | None, Query(description="received at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetters:
    """Refused readings and messages, newest first."""
    async with pool.connection() as conn:
        letters = await queries.dead_letters(
            conn,
            reason=reason.value if reason else None,
            device_id=device,
            park_id=park,
            since=since,
            limit=limit,
        )
    return DeadLetters(data=letters, count=len(letters))
