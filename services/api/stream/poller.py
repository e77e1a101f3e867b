"""Live park state for the stream: one poller per park per API process, shared by its clients.

```
database ──poll every stream_interval_s──▶ ParkPoller ──frame──▶ ParkFeed ──▶ Subscriptions
 (written by any ingest worker)      (signal_queries.live_states)  (hub.py)      (bounded queues)
```

The API learns of new data only from the database, so any number of API and ingest
processes may run. Each poll reads the park's state with the query behind ``/signals``
and hands the frame to its feed (``services/api/stream/hub.py``: event ids, replay,
bounded queues, no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.api.stream import frames
from services.api.stream.frames import ParkFrame
from services.api.stream.hub import CLIENT_QUEUE_EVENTS, ParkFeed, Subscription
from services.config import ApiSettings
from services.core import signals as core
from services.core.registry import ParkInfo
from services.storage import alarms as alarm_queries
from services.storage import signal_queries
from services.storage.registry import RegistryCache
from services.storage.signal_bodies import park_signals_body

logger = logging.getLogger(__name__)

# A poller without clients keeps polling this long, so a reconnecting browser resumes
# from its Last-Event-ID instead of starting over with a snapshot.
LINGER_S = 30.0

STREAM_POLLERS = Gauge("parksense_api_stream_pollers", "Parks polled for the live stream")
STREAM_POLL_ERRORS = Counter(
    "parksense_api_stream_poll_errors", "Stream polls that failed (the stream reports stale)"
)
STREAM_POLL_SECONDS = Histogram(
    "parksense_api_stream_poll_seconds",
    "Time to compute one park's live frame",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def signals_body(
    park: ParkInfo,
    result: core.ParkSignals,
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
) -> bytes:
    """Return the JSON of ``GET /v1/parks/{park_id}/signals`` (``signal_bodies`` builds it)."""
    body = park_signals_body(
        park, result, as_of=as_of, window_s=window_s, online_timeout_s=online_timeout_s
    )
    return body.model_dump_json().encode()


class ParkGoneError(Exception):
    """The park left the registry (a fleet load removed it)."""


class ParkPoller(ParkFeed):
    """Polls one park's state from the database and feeds it to the park's subscriptions."""

    def __init__(
        self,
        park_id: str,
        pool: AsyncConnectionPool,
        settings: ApiSettings,
        *,
        on_exit: Callable[[ParkPoller], None],
        registry: RegistryCache | None = None,
        queue_size: int = CLIENT_QUEUE_EVENTS,
        linger_s: float = LINGER_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Prepare (not start) a poller."""
        super().__init__(park_id, queue_size=queue_size, clock=clock)
        self.pool = pool
        self.settings = settings
        # The hub's, shared by its pollers; a poller on its own reads its own.
        self.registry = registry or RegistryCache()
        self.linger_s = linger_s
        self.ticks = 0
        self._on_exit = on_exit
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the running loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"stream-poller-{self.park_id}"
        )

    # -- polling --

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        STREAM_POLLERS.inc()
        try:
            while True:
                started = loop.time()
                await self._tick()
                if self.subscribers:
                    idle_since = None
                elif idle_since is None:
                    idle_since = started
                elif started - idle_since >= self.linger_s:
                    break  # nobody listening: stop (the hub forgets us before any await)
                elapsed = loop.time() - started
                await asyncio.sleep(max(0.0, self.settings.stream_interval_s - elapsed))
        finally:
            STREAM_POLLERS.dec()
            self._on_exit(self)

    async def _tick(self) -> None:
        self.ticks += 1
        try:
            with STREAM_POLL_SECONDS.time():
                async with self.pool.connection(timeout=self.settings.stream_interval_s) as conn:
                    frame = await self._frame(conn)
        except ParkGoneError:
            self.publish_stale("park_removed", f"park {self.park_id!r} is no longer registered")
        except (psycopg.Error, TimeoutError) as exc:
            STREAM_POLL_ERRORS.inc()
            logger.warning("Stream poll of park %s failed: %s", self.park_id, exc)
            self.publish_stale("database_unreachable", type(exc).__name__)
        except Exception:
            # Atop a long-lived task: log, tell the clients, and keep polling.
            STREAM_POLL_ERRORS.inc()
            logger.exception("Stream poll of park %s failed", self.park_id)
            self.publish_stale("internal_error", "see the API log")
        else:
            self.publish(frame)

    async def _park(self, conn: AsyncConnection) -> ParkInfo:
        park = (await self.registry.current(conn)).park(self.park_id)
        if park is None:
            raise ParkGoneError(self.park_id)
        return park

    async def _frame(self, conn: AsyncConnection) -> ParkFrame:
        park = await self._park(conn)
        as_of = self._clock()
        window_s = float(self.settings.signal_window_s)
        timeout_s = float(self.settings.online_timeout_s)
        [state] = await signal_queries.live_states(
            conn, [park], as_of=as_of, window_s=window_s, online_timeout_s=timeout_s
        )
        observations, planned, result = state.observations, state.planned, state.signals
        types = {d.device_id: d.type_id for d in park.devices}
        units = {(d.type_id, m): rule.unit for d in park.devices for m, rule in d.metrics.items()}
        alarms = frames.device_alarms(result.alarms, types, units)
        alarms = await self._with_since(conn, alarms, result.alarms, as_of)
        return ParkFrame(
            park_id=self.park_id,
            as_of=as_of,
            signals=signals_body(
                park, result, as_of=as_of, window_s=window_s, online_timeout_s=timeout_s
            ),
            alarms=alarms,
            offline=frames.offline_devices(observations, as_of=as_of, online_timeout_s=timeout_s),
            factories=frames.factory_rows(
                observations,
                park.factories,
                as_of=as_of,
                window_s=window_s,
                online_timeout_s=timeout_s,
                planned=planned,
            ),
        )

    async def _with_since(
        self,
        conn: AsyncConnection,
        alarms: dict[str, frames.DeviceAlarm],
        causes: Sequence[core.Alarm],
        as_of: datetime,
    ) -> dict[str, frames.DeviceAlarm]:
        """Carry each continuing alarm's start over; look up the start of new ones."""
        previous = self.frame.alarms if self.frame else {}
        known: dict[str, frames.DeviceAlarm] = {}
        new: list[frames.DeviceAlarm] = []
        for device_id, found in alarms.items():
            before = previous.get(device_id)
            if before is not None and before.key == found.key:
                known[device_id] = replace(found, since=before.since)
            else:
                new.append(found)
        fresh = {found.device_id for found in new}
        starts = await alarm_queries.alarm_starts(
            conn, [a for a in causes if a.device_id in fresh], as_of=as_of
        )
        for found in new:
            begun = [starts.get((found.device_id, c.metric)) for c in found.causes]
            since = min((b for b in begun if b is not None), default=None)
            known[found.device_id] = replace(found, since=since)
        return {device_id: known[device_id] for device_id in alarms}

    async def stop(self) -> None:
        """Stop polling and end every subscriber's stream."""
        for sub in list(self.subscribers):
            self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LiveHub:
    """The pollers of one API process, created on a park's first client."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: ApiSettings,
        registry: RegistryCache,
        *,
        queue_size: int = CLIENT_QUEUE_EVENTS,
        linger_s: float = LINGER_S,
    ) -> None:
        """Create a hub with no pollers."""
        self.pool = pool
        self.settings = settings
        self.registry = registry
        self.queue_size = queue_size
        self.linger_s = linger_s
        self.pollers: dict[str, ParkPoller] = {}
        self.closed = False

    def subscribe(self, park_id: str, last_event_id: str | None = None) -> Subscription:
        """Follow a park (its poller starts with its first client).

        Raises:
            RuntimeError: the hub is closed (the API is shutting down).
        """
        if self.closed:
            raise RuntimeError("the live hub is closed")
        poller = self.pollers.get(park_id)
        if poller is None:
            poller = ParkPoller(
                park_id,
                self.pool,
                self.settings,
                on_exit=self._forget,
                registry=self.registry,
                queue_size=self.queue_size,
                linger_s=self.linger_s,
            )
            self.pollers[park_id] = poller
            poller.start()
        return poller.subscribe(last_event_id)

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop following (the poller lingers, then stops when nobody else follows)."""
        poller = self.pollers.get(sub.park_id)
        if poller is not None:
            poller.unsubscribe(sub)
        else:
            sub.close()

    def _forget(self, poller: ParkPoller) -> None:
        if self.pollers.get(poller.park_id) is poller:
            del self.pollers[poller.park_id]

    async def close(self) -> None:
        """Stop every poller and end every stream."""
        self.closed = True
        for poller in list(self.pollers.values()):
            await poller.stop()
        self.pollers.clear()
