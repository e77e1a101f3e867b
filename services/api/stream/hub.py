"""One park's live stream without I/O: subscriptions, event ids, replay, bounded queues.

A ``ParkFeed`` takes frames (``publish``) and outages (``publish_stale``) and fans the
events out to its subscriptions; ``services/api/stream/poller.py`` polls the database and feeds
it. Each event has an id ``<epoch>.<seq>``: ``epoch`` names the feed (its life in this
process), ``seq`` counts its events. A client that reconnects with a ``Last-Event-ID`` of
the same feed gets the ``alarm``/``availability`` events it missed; any other client
(first connection, another process, a feed that has since restarted, or too much missed)
gets a ``snapshot`` of the current state instead. A client whose queue is full is
disconnected, never buffered without limit; its browser reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

from services.api.stream import frames
from services.api.stream.frames import Change, EventName, ParkFrame

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

STREAM_CLIENTS = Gauge("parksense_api_stream_clients", "Clients following a park's stream")
STREAM_DROPPED = Counter(
    "parksense_api_stream_clients_dropped", "Stream clients disconnected because they fell behind"
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


class ParkFeed:
    """One park's frames fanned out to its subscriptions, with replay for reconnections."""

    def __init__(
        self,
        park_id: str,
        *,
        queue_size: int = CLIENT_QUEUE_EVENTS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Create a feed with no subscriptions and no frame yet."""
        self.park_id = park_id
        self.epoch = secrets.token_hex(4)
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self.frame: ParkFrame | None = None
        self._clock = clock
        self._seq = 0
        self._replay: deque[tuple[int, StreamEvent]] = deque(maxlen=REPLAY_EVENTS)
        # Changes with a sequence number at or below this may be missing from _replay.
        self._replay_floor = 0
        self._latest_factories: tuple[frames.FactoryRow, ...] | None = None
        self._stale: StreamEvent | None = None

    # -- subscriptions --

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
