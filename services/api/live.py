"""Live park state for the stream: one poller per park per API process, shared by its clients.

```
database ──poll every stream_interval_s──▶ ParkPoller ──frame──▶ changes ──▶ Subscriptions
 (written by any ingest worker)               (one per park)               (bounded queues)
```

The API learns of new data only from the database, so any number of API and ingest
processes may run. Each event has an id ``<epoch>.<seq>``: ``epoch`` names the poller (its
life in this process), ``seq`` counts its events. A client that reconnects with a
``Last-Event-ID`` of the same poller gets the ``alarm``/``availability`` events it missed;
any other client (first connection, another process, a poller that has since restarted,
or too much missed) gets a ``snapshot`` of the current state instead. A client whose
queue is full is disconnected, never buffered without limit; its browser reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.api import live_frames as frames
from services.api.live_frames import Change, EventName, ParkFrame
from services.config import ApiSettings
from services.core import signals as core
from services.core.registry import ParkInfo
from services.storage import alarms as alarm_queries
from services.storage import signal_queries
from services.storage.registry import RegistryCache
from services.storage.signal_bodies import park_signals_body

logger = logging.getLogger(__name__)

# Events a client may have waiting before it counts as too slow and is disconnected. A
# tick brings two or three events (at most MAX_CHANGES_PER_TICK + 2), so this is about
# half a minute of a stalled client at the default interval.
CLIENT_QUEUE_EVENTS = 64
# Change events kept for clients that reconnect with Last-Event-ID; older ones are
# replaced by a snapshot.
REPLAY_EVENTS = 500
# A reconnecting client missing more changes than this gets a snapshot: cheaper to send
# and it cannot overflow the client's queue.
MAX_REPLAY = CLIENT_QUEUE_EVENTS // 2
# A poller without clients keeps polling this long, so a reconnecting browser resumes
# from its Last-Event-ID instead of starting over with a snapshot.
LINGER_S = 30.0

STREAM_CLIENTS = Gauge("parksense_api_stream_clients", "Clients following a park's stream")
STREAM_POLLERS = Gauge("parksense_api_stream_pollers", "Parks polled for the live stream")
STREAM_DROPPED = Counter(
    "parksense_api_stream_clients_dropped", "Stream clients disconnected because they fell behind"
)
STREAM_POLL_ERRORS = Counter(
    "parksense_api_stream_poll_errors", "Stream polls that failed (the stream reports stale)"
)
STREAM_POLL_SECONDS = Histogram(
    "parksense_api_stream_poll_seconds",
    "Time to compute one park's live frame",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One Server-Sent Event: ``id``, ``event`` and ``data`` (JSON)."""

    id: str
    event: str
    data: str


def event_id(epoch: str, seq: int) -> str:
    """Format an event id."""
    return f"{epoch}.{seq}"


def parse_event_id(text: str | None) -> tuple[str, int] | None:
    """Parse a ``Last-Event-ID``; None when absent or not one of ours."""
    if not text:
        return None
    epoch, _, seq = text.strip().rpartition(".")
    if not epoch or not seq.isdigit():
        return None
    return epoch, int(seq)


class Subscription:
    """One client's bounded queue of events; ``None`` in the queue ends its stream."""

    def __init__(self, park_id: str, maxsize: int) -> None:
        """Create an open subscription."""
        self.park_id = park_id
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(maxsize=maxsize)
        self.closed = False
        self.dropped = False
        self.needs_snapshot = False

    def offer(self, event: StreamEvent) -> bool:
        """Queue an event; a full queue disconnects the client. Return whether it is open."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            STREAM_DROPPED.inc()
            logger.warning("Stream client of park %s fell behind; disconnecting it", self.park_id)
            self.close()
            return False
        return True

    def close(self) -> None:
        """End the stream: what is queued is discarded, the reader sees the end next."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield queued events until the subscription is closed."""
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event


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


class ParkPoller:
    """Polls one park's state from the database and fans events out to its subscriptions."""

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
        self.park_id = park_id
        self.pool = pool
        self.settings = settings
        # The hub's, shared by its pollers; a poller on its own reads its own.
        self.registry = registry or RegistryCache()
        self.epoch = secrets.token_hex(4)
        self.queue_size = queue_size
        self.linger_s = linger_s
        self.subscribers: set[Subscription] = set()
        self.frame: ParkFrame | None = None
        self.ticks = 0
        self._on_exit = on_exit
        self._clock = clock
        self._seq = 0
        self._replay: deque[tuple[int, StreamEvent]] = deque(maxlen=REPLAY_EVENTS)
        # Changes with a sequence number at or below this may be missing from _replay.
        self._replay_floor = 0
        self._latest_factories: tuple[frames.FactoryRow, ...] | None = None
        self._stale: StreamEvent | None = None
        self._task: asyncio.Task[None] | None = None

    # -- subscriptions --

    def start(self) -> None:
        """Start polling in the running loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"stream-poller-{self.park_id}"
        )

    def subscribe(self, last_event_id: str | None) -> Subscription:
        """Add a client; queue what it needs to catch up (replay, or snapshot and latest)."""
        sub = Subscription(self.park_id, self.queue_size)
        self.subscribers.add(sub)
        STREAM_CLIENTS.inc()
        for event in self._catch_up(parse_event_id(last_event_id), sub):
            if not sub.offer(event):
                break
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a client (its stream ended or it went away)."""
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            STREAM_CLIENTS.dec()
        sub.close()

    def _catch_up(self, last: tuple[str, int] | None, sub: Subscription) -> list[StreamEvent]:
        frame = self.frame
        if frame is None:
            sub.needs_snapshot = True
            return [self._stale] if self._stale else []
        current = event_id(self.epoch, self._seq)
        replay = self._replay_since(last)
        head = (
            replay if replay is not None else [self._stamp(frames.snapshot_change(frame), current)]
        )
        tail = [self._stamp(frames.factories_change(frame), current)]
        if self._stale is not None:
            tail.append(self._stale)
        else:
            tail.append(self._stamp(frames.signals_change(frame), current))
        return head + tail

    def _replay_since(self, last: tuple[str, int] | None) -> list[StreamEvent] | None:
        """The changes after ``last``, or None when they cannot all be replayed."""
        if last is None or last[0] != self.epoch:
            return None
        seq = last[1]
        if seq < self._replay_floor or seq > self._seq:
            return None
        missed = [event for number, event in self._replay if number > seq]
        return missed if len(missed) <= MAX_REPLAY else None

    # -- events --

    def _stamp(self, change: Change, ident: str) -> StreamEvent:
        return StreamEvent(id=ident, event=change.event.value, data=change.data.decode())

    def _next(self, change: Change) -> StreamEvent:
        self._seq += 1
        return self._stamp(change, event_id(self.epoch, self._seq))

    def _remember(self, event: StreamEvent) -> None:
        if len(self._replay) == self._replay.maxlen:
            self._replay_floor = self._replay[0][0]
        self._replay.append((self._seq, event))

    def _broadcast(
        self, events: Sequence[StreamEvent], newcomer: Sequence[StreamEvent] | None = None
    ) -> None:
        """Send ``events``; clients still waiting for a snapshot get ``newcomer`` instead."""
        for sub in list(self.subscribers):
            batch = events
            if sub.needs_snapshot and newcomer is not None:
                batch = newcomer
                sub.needs_snapshot = False
            for event in batch:
                if not sub.offer(event):
                    self.unsubscribe(sub)
                    break

    def publish(self, frame: ParkFrame) -> None:
        """Take a new frame: send each subscriber the changes, the factories and the signals."""
        previous, self.frame = self.frame, frame
        self._stale = None
        changes = frames.changes(previous, frame) if previous is not None else []
        events = []
        for change in changes:
            event = self._next(change)
            self._remember(event)
            events.append(event)
        snapshot_id = event_id(self.epoch, self._seq)
        factories = frames.factories_change(frame)
        factories_event = self._stamp(factories, snapshot_id)
        if frame.factories != self._latest_factories:
            self._latest_factories = frame.factories
            factories_event = self._next(factories)
            events.append(factories_event)
        signals_event = self._next(frames.signals_change(frame))
        events.append(signals_event)
        newcomer = [
            self._stamp(frames.snapshot_change(frame), snapshot_id),
            factories_event,
            signals_event,
        ]
        self._broadcast(events, newcomer)

    def publish_stale(self, reason: str, detail: str) -> None:
        """Tell subscribers the data is not fresh (once per outage; remembered for newcomers)."""
        if self._stale is not None:
            return
        payload = {
            "park_id": self.park_id,
            "reason": reason,
            "detail": detail,
            "since": self._clock(),
            "last_as_of": self.frame.as_of if self.frame else None,
        }
        event = self._next(Change(EventName.STALE, frames.dumps(payload)))
        self._remember(event)
        self._stale = event
        self._broadcast([event])

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
