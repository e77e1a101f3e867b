"""The live stream: ``GET /v1/parks/{park_id}/stream``, Server-Sent Events of a park's state.

Events (each with an ``id:``; the first message carries a ``retry:`` hint):

- ``signals``: the JSON of ``GET /v1/parks/{park_id}/signals``, every ``stream_interval_s``
  (at most 2 s);
- ``snapshot``: every device in alarm and every offline device, on (re)connection;
- ``alarm``: a device entered alarm (``active: true``, with its reasons) or left it;
- ``availability``: a device went offline (``online: false``, with the reason) or came back;
- ``factories``: the factory table, when it changed;
- ``stale``: the API cannot compute fresh signals (database unreachable, park removed).

docs/dashboard.md describes every payload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from services.api.auth import require_scope
from services.api.deps import ParkId, PoolDep
from services.api.problems import ProblemError, not_found
from services.api.stream.poller import LiveHub
from services.core.api_keys import Scope
from services.storage import queries

# How long a browser waits before reconnecting after the stream drops (SSE ``retry:``).
RETRY_MS = 2000
# Comment lines keep idle proxies from closing the connection between events.
PING_S = 15
# A send blocked this long (the client stopped reading and its TCP window is full) ends
# the stream; the bounded queue catches the same client when it falls behind more slowly.
SEND_TIMEOUT_S = 10.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside create_app's lifespan, so the pool exists and outlives the hub.
    hub = LiveHub(app.state.pool, app.state.settings, app.state.registry)
    app.state.live_hub = hub
    try:
        yield
    finally:
        await hub.close()


router = APIRouter(tags=["signals"], lifespan=_lifespan, dependencies=[require_scope(Scope.READ)])


def get_hub(request: Request) -> LiveHub:
    """Return the app's live hub (created by this router's lifespan)."""
    hub: LiveHub = request.app.state.live_hub
    return hub


HubDep = Annotated[LiveHub, Depends(get_hub)]

_EXAMPLE = (
    "retry: 2000\n\n"
    "id: 9f3c2a1b.41\nevent: signals\n"
    'data: {"park_id":"hebi-tech","as_of":"2026-11-26T10:00:00Z","signals":{...}}\n\n'
    "id: 9f3c2a1b.42\nevent: alarm\n"
    'data: {"device_id":"hebi-tech-f01-mach-3","active":true,"reasons":[...]}\n\n'
)


@router.get(
    "/v1/parks/{park_id}/stream",
    summary="A park's live signals, alarms and availability (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": _EXAMPLE}}},
        404: {"description": "Unknown park (problem+json)"},
        503: {"description": "The API is shutting down (problem+json)"},
    },
)
async def park_stream(
    park_id: ParkId,
    pool: PoolDep,
    hub: HubDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="sent by the browser on reconnection; missed alarm and availability"
            " events are replayed when this API process still has them, otherwise a snapshot"
            " is sent",
        ),
    ] = None,
) -> EventSourceResponse:
    """Follow a park: ``signals`` at least every 2 s, plus ``alarm`` and ``availability`` changes.

    On connection the stream sends a ``snapshot`` (devices in alarm, offline devices), the
    ``factories`` table and the latest ``signals``; then changes as they are seen in the
    database. A client that stops reading is disconnected rather than buffered.
    """
    async with pool.connection() as conn:
        if not await queries.park_exists(conn, park_id):
            raise not_found("park", park_id)
    try:
        subscription = hub.subscribe(park_id, last_event_id)
    except RuntimeError as exc:
        raise ProblemError(503, "Shutting down", "the API is stopping; retry shortly") from exc

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(comment=f"parksense stream of {park_id}", retry=RETRY_MS)
            async for event in subscription.events():
                yield ServerSentEvent(data=event.data, event=event.event, id=event.id)
        finally:
            hub.unsubscribe(subscription)

    return EventSourceResponse(
        stream(),
        ping=PING_S,
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store"},
    )
