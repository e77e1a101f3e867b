"""The ingest pipeline: an asyncio shell around the pure core.

```
paho ─▶ queue ─▶ decode ─▶ validate ─▶ Batcher ─▶ COPY + commit ─▶ AckLedger ─▶ ack
                   └────────┴─▶ Rejection (dead letter, counted) ──────▲
```

Memory is bounded by ``max_buffered_messages``: the consumer releases a slot only when
the message's batch has committed, and while no slot is free it stops reading the socket
(see ``mqtt.py``), so the broker holds the rest. Nothing is acknowledged before its batch
commits, so while the database is away memory stays flat.

Up to ``writers`` batches are written at once, each over a connection of its own, and the
loop keeps judging while they are in flight: the next batch fills while the others are
written, and starts as soon as it is due and a connection is free. Acknowledgements still
leave in arrival order, each only after its own batch's commit (``AckLedger`` holds a
batch that committed first until the ones before it have), and the fleet version is read
before each write as before. Concurrent writes are safe in the database for the same
reasons two workers' are (rows and keys locked in key order; roll-ups only logged). A batch
holding status updates or Sparkplug messages is written alone, after the writes in flight
and before any other starts, so that their order across batches is the arrival order. A
batch that fills up while every connection is busy waits for one (the loop then stops
taking messages, and the buffer bound holds the rest).

A fleet load is in force when it returns: before a batch is written the fleet version is
read, and if a load committed after the batch's messages were judged they are judged
again from their raw form (see ``_judged_in_force``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg

from services.config import DatabaseSettings, IngestSettings, MqttSettings
from services.core.acks import AckLedger
from services.core.assignment import follows_registry, registry_factories
from services.core.batching import Batch, Batcher
from services.core.deadletters import DeadLetter, dead_letter, minimal_dead_letter
from services.core.outcomes import StorageOutcome, backoff_s, classify
from services.core.readings import MessageOutcome, Reading, Rejection, RejectReason, StatusUpdate
from services.core.registry import Registry
from services.core.sparkplug import (
    FrameOutcome,
    NodeKey,
    NodeState,
    SparkplugOutcome,
    judge_frames,
)
from services.core.sparkplug_payload import (
    Frame,
    is_sparkplug_topic,
    read_frame,
    rebirth_command,
    rebirth_topic,
)
from services.core.validate import Limits, judge_message
from services.ingest import metrics
from services.ingest.mqtt import MqttConsumer, RawMessage
from services.storage.errors import UnencodableRowError
from services.storage.heartbeat import Heartbeat, beat
from services.storage.registry import fleet_version, read_registry
from services.storage.writer import BatchWriter, WriteResult

logger = logging.getLogger(__name__)

# How often the loop wakes when idle, to notice a stop request or a due registry refresh.
_IDLE_WAKE_S = 0.2
# While a batch is written, what arrived is judged every this many seconds: a wake-up per
# message would cost more than the judging, and a write takes tens of milliseconds or more.
_JUDGE_SLICE_S = 0.02
# Heartbeats tell the API this worker is alive; the API calls a worker stale after 3 missed.
_HEARTBEAT_S = 2.0
# Commit lag is observed for at most this many readings per batch (a stride sample).
_LAG_SAMPLES_PER_BATCH = 256


class _RowsRejectedError(Exception):
    """The database refused the batch's rows themselves (SQLSTATE class 22 or 23)."""

    def __init__(self, error: psycopg.Error | UnencodableRowError) -> None:
        super().__init__(str(error))
        self.error = error


class Pipeline:
    """Consumes MQTT messages and writes them in batches, acknowledging after commit."""

    def __init__(
        self, ingest: IngestSettings, database: DatabaseSettings, mqtt: MqttSettings
    ) -> None:
        """Create the pipeline; ``run`` starts it."""
        self._settings = ingest
        self._conninfo = database.conninfo(application_name=f"ingest:{ingest.client_id}")
        self._mqtt_settings = mqtt
        self._limits = Limits(
            max_future=timedelta(seconds=ingest.max_future_s),
            retention=timedelta(days=ingest.retention_days),
        )
        self._batcher = Batcher(ingest.max_batch_rows, ingest.flush_interval_s)
        self._ledger = AckLedger()
        self._ledger_epoch = 0
        # Connections free to take a batch; each write holds one until it ends.
        self._idle_writers = [BatchWriter(self._conninfo) for _ in range(ingest.writers)]
        self._all_writers = tuple(self._idle_writers)
        self._registry = Registry()
        # Messages handed over by the network thread, not yet judged; set when some arrive.
        self._inbox: deque[RawMessage] = deque()
        self._arrived = asyncio.Event()
        # The writes in flight (at most ``writers``), and the one written alone, if any.
        self._writing: set[asyncio.Task[None]] = set()
        self._alone: asyncio.Task[None] | None = None
        self._next_token = 0
        self._token_epochs: dict[int, int] = {}
        # The pending batch's messages as received, and the oldest registry version they
        # were judged against: a flush re-judges them if the registry has moved since.
        self._pending_raw: list[tuple[int, RawMessage]] = []
        self._pending_version = 0
        # The last receive time converted: the messages of one read share it.
        self._received_s = -1.0
        self._received_at = datetime.fromtimestamp(0, UTC)
        self._degraded = False
        self._started_at = datetime.now(UTC)
        self._consumer: MqttConsumer | None = None
        self._control: psycopg.AsyncConnection | None = None
        self._next_refresh = 0.0
        self._next_heartbeat = 0.0
        self._told_subscribed = 0
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography

    @property
    def registry(self) -> Registry:
        """The registry snapshot in use."""
        return self._registry

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain: flush, commit, acknowledge, disconnect."""
        metrics.BUFFER_LIMIT.set(self._settings.max_buffered_messages)
        await self._wait_for_database(stop)
        if stop.is_set():
            return
        # The writer is ready before we subscribe, so the first messages find it.
        consumer = MqttConsumer(
            self._mqtt_settings,
            self._settings,
            asyncio.get_running_loop(),
            self._receive,
            registry_factories(self._registry),
            self._registry.version,
        )
        await asyncio.to_thread(consumer.start)
        self._consumer = consumer
        logger.info(
            "Ingest %s running: batches of %d rows or %.0f ms, receive maximum %d",
            self._settings.client_id,
            self._settings.max_batch_rows,
            self._settings.flush_interval_s * 1000,
            self._settings.receive_maximum,
        )
        try:
            await self._consume(stop)
        finally:
            await self._drain(consumer)

    async def _wait_for_database(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                for writer in self._all_writers:
                    await writer.connect()
                await self._refresh_registry(force=True)
            except psycopg.OperationalError as exc:
                delay = self._backoff(attempt)
                logger.warning("Database not reachable (%s), retrying in %.1f s", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
            else:
                return

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            running = {task for task in self._writing if not task.done()}
            if running:
                # Judge what arrived during the writes in slices, not one wake-up a message.
                await asyncio.wait(
                    running, timeout=_JUDGE_SLICE_S, return_when=asyncio.FIRST_COMPLETED
                )
            elif not self._inbox:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=self._wait_s())
            # Take what has arrived without yielding, up to a full batch.
            inbox = self._inbox
            while inbox and not self._batcher.full:
                self._accept(inbox.popleft())
            await self._advance_writes()
            now = time.monotonic()
            if now >= self._next_refresh:
                await self._refresh_registry()
            if now >= self._next_heartbeat or self._subscription_moved():
                await self._heartbeat()

    def _receive(self, messages: list[RawMessage]) -> None:
        """Take what one read of the network thread brought (called on the loop)."""
        metrics.MESSAGES_RECEIVED.inc(len(messages))
        self._inbox.extend(messages)
        self._arrived.set()

    def _wait_s(self) -> float:
        """How long to wait for the next message before looking at the batch again."""
        wait = self._batcher.seconds_until_due(time.monotonic())
        return _IDLE_WAKE_S if wait is None else min(wait, _IDLE_WAKE_S)

    async def _advance_writes(self) -> None:
        """Finish the writes that have ended; start the next when its batch is due.

        A due batch waits while every connection is busy (or a batch is written alone); a
        full one makes the loop wait for a write to end, so at most ``writers + 1`` batches
        are held.
        """
        await self._reap_writes()
        while self._batcher.full and not self._can_start():
            await asyncio.wait(self._writing, return_when=asyncio.FIRST_COMPLETED)
            await self._reap_writes()
        if self._can_start() and self._batcher.due(time.monotonic()):
            await self._start_write()

    def _can_start(self) -> bool:
        """Whether a connection is free and no batch is being written alone."""
        return bool(self._idle_writers) and self._alone is None

    async def _reap_writes(self) -> None:
        """Forget the writes that have ended (re-raising what ended one)."""
        for task in [task for task in self._writing if task.done()]:
            self._writing.discard(task)
            if task is self._alone:
                self._alone = None
            await task

    async def _start_write(self) -> None:
        """Take the pending batch, judge it in force, and start writing it."""
        batch = self._batcher.take()
        pending, self._pending_raw = self._pending_raw, []
        if not batch.tokens:
            return
        batch = await self._judged_in_force(batch, pending)
        alone = bool(batch.statuses or batch.frames)
        if alone:
            await self._finish_writes()
        task = asyncio.create_task(self._write_and_ack(batch, self._idle_writers.pop()))
        self._writing.add(task)
        if alone:
            self._alone = task

    async def _finish_writes(self) -> None:
        """Wait for every write in flight (re-raising what ended one)."""
        while self._writing:
            await asyncio.wait(self._writing)
            await self._reap_writes()

    def _accept(self, raw: RawMessage) -> None:
        if raw.epoch != self._ledger_epoch:
            # A new connection: the broker redelivers everything unacknowledged on the old
            # one, so its pending acknowledgements are void (writes are idempotent).
            dropped = self._ledger.clear()
            if dropped:
                logger.info(
                    "Connection %d replaced; %d unacked messages will be redelivered",
                    raw.epoch,
                    dropped,
                )
            self._ledger_epoch = raw.epoch
        token = self._next_token
        self._next_token += 1
        if raw.qos > 0:
            self._ledger.arrived(token, raw.mid)
        if not self._pending_raw:
            self._pending_version = self._registry.version
        self._pending_raw.append((token, raw))
        self._batcher.add(token, self._judge(raw), time.monotonic())

    def _judge(self, raw: RawMessage) -> MessageOutcome | Frame:
        """Judge one message against the registry in use (a Sparkplug one when written)."""
        if raw.received_at != self._received_s:
            self._received_s = raw.received_at
            self._received_at = datetime.fromtimestamp(raw.received_at, UTC)
        received_at = self._received_at
        try:
            if is_sparkplug_topic(raw.topic):
                return read_frame(raw.topic, raw.payload, received_at)
            return judge_message(raw.topic, raw.payload, self._registry, received_at, self._limits)
        except Exception:  # a bug in validation must not stall the pipeline
            logger.exception("Judging a message on %s failed; dead-lettering it", raw.topic)
            return MessageOutcome(
                rejections=(
                    Rejection(
                        reason=RejectReason.INVALID_PAYLOAD,
                        detail="internal error while validating; see the ingest log",
                        topic=raw.topic,
                        received_at=received_at,
                        payload=raw.payload,
                    ),
                )
            )

    async def _flush(self) -> None:
        """Write everything received so far and wait for it (on shutdown)."""
        await self._finish_writes()
        await self._start_write()
        await self._finish_writes()

    async def _write_and_ack(self, batch: Batch, writer: BatchWriter) -> None:
        """Write one batch over ``writer``, then acknowledge what is settled, in arrival order."""
        try:
            await self._write_splitting(batch, writer)
        finally:
            self._idle_writers.append(writer)
        self._ledger.settle(batch.tokens)
        released = self._ledger.release()
        consumer = self._consumer
        sent = consumer.ack(released, self._ledger_epoch) if consumer else 0
        metrics.MESSAGES_ACKED.inc(sent)
        metrics.ACKS_SKIPPED.inc(len(released) - sent)
        if consumer is not None:
            consumer.release(batch.messages)
            metrics.BUFFER_MESSAGES.set(consumer.held)

    async def _write_splitting(self, batch: Batch, writer: BatchWriter) -> None:
        """Write a batch; if the database refuses rows, find the bad ones and dead-letter them.

        Whatever happens to a refused row, the call returns (or raises on a fatal error), so
        the batch's messages are settled and acknowledged: no message can loop.
        """
        try:
            await self._write_retrying(batch, writer)
        except _RowsRejectedError as exc:
            error = exc.error
        else:
            return
        if batch.frames:
            await self._split_frames(batch, error, writer)
        elif batch.dead_letters:
            # Each dead letter on its own, each with its own fallback; the rest as before.
            await self._write_splitting(replace(batch, dead_letters=[]), writer)
            for letter in batch.dead_letters:
                await self._write_dead_letter(letter, writer)
        elif len(batch.readings) > 1:
            half = len(batch.readings) // 2
            await self._write_splitting(replace(batch, readings=batch.readings[:half]), writer)
            await self._write_splitting(Batch(readings=batch.readings[half:]), writer)
        elif batch.readings:
            await self._write_splitting(replace(batch, readings=[]), writer)
            await self._write_dead_letter(_storage_rejected(batch.readings[0], error), writer)
        elif len(batch.statuses) > 1:
            half = len(batch.statuses) // 2
            await self._write_splitting(replace(batch, statuses=batch.statuses[:half]), writer)
            await self._write_splitting(Batch(statuses=batch.statuses[half:]), writer)
        elif batch.statuses:
            await self._write_dead_letter(_storage_rejected(batch.statuses[0], error), writer)

    async def _split_frames(
        self, batch: Batch, error: psycopg.Error | UnencodableRowError, writer: BatchWriter
    ) -> None:
        """Sparkplug messages turn into rows inside the write: try each on its own."""
        await self._write_splitting(replace(batch, frames=[]), writer)
        if len(batch.frames) > 1:
            for frame in batch.frames:
                await self._write_splitting(Batch(frames=[frame]), writer)
        else:
            await self._write_dead_letter(_frame_rejected(batch.frames[0], error), writer)

    async def _write_dead_letter(self, letter: DeadLetter, writer: BatchWriter) -> None:
        """Write one dead letter; if refused, its minimal form; if that too, count and log."""
        try:
            await self._write_retrying(Batch(dead_letters=[letter]), writer)
        except _RowsRejectedError as exc:
            first = exc.error
        else:
            return
        logger.warning(
            "The database refused a dead letter on %s (%s); storing it in minimal form",
            letter.topic[:200],
            first.sqlstate,
        )
        minimal = minimal_dead_letter(
            letter,
            f"the full dead letter was refused ({first.sqlstate}): {_first_line(first)}",
        )
        try:
            await self._write_retrying(Batch(dead_letters=[minimal]), writer)
        except _RowsRejectedError as exc:
            metrics.DEAD_LETTERS_UNSTORABLE.inc()
            # The payload stays out of the log: it is what could not be stored.
            logger.error(  # noqa: TRY400 - an expected outcome, said in one line
                "Not even a minimal dead letter on %s could be stored (%s); acknowledging"
                " the message, %d refusals (%s) recorded only in this log",
                minimal.topic[:200],
                exc.error.sqlstate,
                letter.refused,
                ", ".join(group.reason.value for group in letter.groups),
            )
        else:
            metrics.DEAD_LETTERS_MINIMAL.inc()

    async def _write_retrying(self, batch: Batch, writer: BatchWriter) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                result = await writer.write(batch, self._judge_sparkplug)
            except (psycopg.Error, UnencodableRowError) as exc:
                outcome = classify(exc.sqlstate)
                await writer.close()
                if outcome is StorageOutcome.REJECT:
                    raise _RowsRejectedError(exc) from exc
                if outcome is StorageOutcome.FATAL:
                    logger.critical("Unrecoverable storage error %s: %s", exc.sqlstate, exc)
                    raise
                self._set_degraded(degraded=True)
                metrics.DB_RETRIES.inc()
                delay = self._backoff(attempt)
                logger.warning(
                    "Writing %d rows failed (%s: %s); retry %d in %.1f s, nothing acknowledged",
                    len(batch.readings) + len(batch.dead_letters),
                    exc.sqlstate or "connection",
                    _first_line(exc),
                    attempt + 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            elapsed = time.monotonic() - started
            self._set_degraded(degraded=False)
            self._record(batch, result, elapsed)
            if result.sparkplug is not None:
                self._request_rebirths(result.sparkplug.rebirths)
            return

    def _judge_sparkplug(
        self, states: Mapping[NodeKey, NodeState], frames: Sequence[Frame]
    ) -> SparkplugOutcome:
        """Judge Sparkplug messages against their edge nodes' states, in the write transaction."""
        try:
            return judge_frames(states, frames, self._registry, self._limits)
        except Exception:  # a bug in judging must not stall the pipeline
            logger.exception(
                "Judging %d Sparkplug messages failed; dead-lettering them", len(frames)
            )
            refused = tuple(
                FrameOutcome(
                    rejections=(
                        Rejection(
                            reason=RejectReason.INVALID_PAYLOAD,
                            detail="internal error while validating; see the ingest log",
                            topic=frame.topic,
                            received_at=frame.received_at,
                            payload=frame.payload,
                            park_id=frame.address.park_id,
                            device_id=frame.address.device_id,
                        ),
                    )
                )
                for frame in frames
            )
            return SparkplugOutcome(refused, states, ())

    def _request_rebirths(self, nodes: Sequence[NodeKey]) -> None:
        """Ask edge nodes to rebirth (after the commit that recorded why)."""
        consumer = self._consumer
        if not nodes or consumer is None:
            return
        payload = rebirth_command(int(time.time() * 1000))
        for park_id, factory_id in nodes:
            if consumer.publish(rebirth_topic(park_id, factory_id), payload):
                metrics.SPARKPLUG_REBIRTHS.inc()
                logger.info("Asked edge node %s/%s to rebirth", park_id, factory_id)
            else:
                logger.warning(
                    "Not connected: no Rebirth request to %s/%s (its next message asks again)",
                    park_id,
                    factory_id,
                )

    def _record(self, batch: Batch, result: WriteResult, elapsed: float) -> None:
        metrics.COMMIT_SECONDS.observe(elapsed)
        metrics.BATCH_ROWS.observe(result.staged + result.dead_letters)
        metrics.READINGS_RECEIVED.inc(result.staged)
        metrics.READINGS_STORED.inc(result.inserted)
        metrics.READINGS_DUPLICATE.inc(result.duplicates)
        metrics.STATUS_UPDATES.inc(result.statuses)
        rejections = (
            [r for o in result.sparkplug.outcomes for r in o.rejections] if result.sparkplug else []
        )
        for rejection in rejections:
            metrics.REFUSED.labels(rejection.reason.value).inc()
        for letter in batch.dead_letters:
            for group in letter.groups:
                metrics.REFUSED.labels(group.reason.value).inc(group.refused)
        if batch.readings:
            now = datetime.now(UTC)
            horizon = now - timedelta(hours=1)
            stride = max(1, len(batch.readings) // _LAG_SAMPLES_PER_BATCH)
            for reading in batch.readings[::stride]:
                if reading.ts >= horizon:
                    metrics.COMMIT_LAG.observe(max(0.0, (now - reading.ts).total_seconds()))

    def _set_degraded(self, *, degraded: bool) -> None:
        if degraded != self._degraded:
            if degraded:
                logger.error("Database unavailable: holding messages unacknowledged")
            else:
                logger.info("Database back: writing again")
        self._degraded = degraded
        metrics.DEGRADED.set(1 if degraded else 0)

    def _backoff(self, attempt: int) -> float:
        return backoff_s(
            attempt, self._settings.retry_initial_s, self._settings.retry_max_s, self._rng.random()
        )

    async def _control_conn(self) -> psycopg.AsyncConnection:
        if self._control is None or self._control.closed:
            self._control = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        return self._control

    async def _refresh_registry(self, *, force: bool = False) -> None:
        """Poll the fleet version and load the registry if it moved (best effort)."""
        self._next_refresh = time.monotonic() + self._settings.registry_refresh_s
        try:
            await self._sync_registry(await self._control_conn(), force=force)
        except psycopg.OperationalError:
            if force:
                raise
            logger.debug("Registry refresh failed; keeping version %d", self._registry.version)
            await self._drop_control()

    async def _sync_registry(self, conn: psycopg.AsyncConnection, *, force: bool = False) -> None:
        """Load the registry unless the one in use has the database's fleet version."""
        version = await fleet_version(conn)
        if not force and version == self._registry.version:
            return
        # One snapshot: a load committing meanwhile must not mix two fleets in one registry.
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._registry = await read_registry(conn)
        metrics.REGISTRY_VERSION.set(self._registry.version)
        if self._consumer is not None:
            self._consumer.assign(registry_factories(self._registry), self._registry.version)
        logger.info(
            "Registry version %d: %d devices", self._registry.version, len(self._registry.devices)
        )

    async def _judged_in_force(self, batch: Batch, pending: list[tuple[int, RawMessage]]) -> Batch:
        """Return ``batch`` judged against the registry in force now.

        Every message of the batch was received before the version is read here, so a
        fleet load that had returned when a message arrived has committed before this
        read. If the registry moved since the batch was judged, the messages are judged
        again from their raw form against the new one. When it has not moved this costs
        one indexed read of ``fleet_versions`` per batch.
        """
        await self._sync_registry_retrying()
        if self._pending_version == self._registry.version:
            return batch
        logger.info(
            "Registry moved from version %d to %d under a batch; judging %d messages again",
            self._pending_version,
            self._registry.version,
            len(pending),
        )
        rejudged = Batcher(self._settings.max_batch_rows, self._settings.flush_interval_s)
        now = time.monotonic()
        for token, raw in pending:
            rejudged.add(token, self._judge(raw), now)
        metrics.MESSAGES_REJUDGED.inc(len(pending))
        return rejudged.take()

    async def _sync_registry_retrying(self) -> None:
        """Bring the registry up to the database's version, retrying while it is away."""
        attempt = 0
        while True:
            try:
                await self._sync_registry(await self._control_conn())
            except psycopg.Error as exc:
                await self._drop_control()
                if classify(exc.sqlstate) is not StorageOutcome.RETRY:
                    logger.critical("Unrecoverable registry error %s: %s", exc.sqlstate, exc)
                    raise
                self._set_degraded(degraded=True)
                metrics.DB_RETRIES.inc()
                delay = self._backoff(attempt)
                logger.warning(
                    "Reading the fleet version failed (%s); retry %d in %.1f s",
                    exc.sqlstate or "connection",
                    attempt + 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
            else:
                return

    def _subscription_moved(self) -> bool:
        """Whether the broker acknowledged a registry version the heartbeat has not told."""
        consumer = self._consumer
        return consumer is not None and consumer.subscribed_version != self._told_subscribed

    async def _heartbeat(self) -> None:
        self._next_heartbeat = time.monotonic() + _HEARTBEAT_S
        subscribed = self._consumer.subscribed_version if self._consumer else 0
        self._told_subscribed = subscribed
        try:
            await beat(
                await self._control_conn(),
                Heartbeat(
                    client_id=self._settings.client_id,
                    pid=os.getpid(),
                    started_at=self._started_at,
                    registry_version=self._registry.version,
                    degraded=self._degraded,
                    buffered=len(self._ledger),
                    subscribed_version=subscribed,
                    follows_registry=follows_registry(
                        self._settings.assignment, self._settings.slot
                    ),
                ),
            )
        except psycopg.Error:
            logger.debug("Heartbeat failed", exc_info=True)
            await self._drop_control()

    async def _drop_control(self) -> None:
        if self._control is not None:
            conn, self._control = self._control, None
            try:
                await conn.close()
            except psycopg.Error:
                logger.debug("Closing the control connection failed", exc_info=True)

    async def _drain(self, consumer: MqttConsumer) -> None:
        """Stop consuming, write what was received, acknowledge it, disconnect."""
        consumer.stop_receiving()
        deadline = self._settings.shutdown_deadline_s
        try:
            async with asyncio.timeout(deadline):
                await self._finish_writes()
                while self._inbox:
                    self._accept(self._inbox.popleft())
                await self._flush()
        except TimeoutError:
            logger.warning(
                "Shutdown deadline of %.0f s passed; unacknowledged messages will be redelivered",
                deadline,
            )
        await asyncio.to_thread(consumer.stop)
        for writer in self._all_writers:
            await writer.close()
        await self._drop_control()
        logger.info("Ingest %s stopped", self._settings.client_id)


def _storage_rejected(
    row: Reading | StatusUpdate, error: psycopg.Error | UnencodableRowError
) -> DeadLetter:
    """A dead letter for a reading or status the database refused, with its reason."""
    return dead_letter(
        Rejection(
            reason=RejectReason.STORAGE_REJECTED,
            detail=f"database refused the row ({error.sqlstate}): {_first_line(error)}",
            topic="",
            received_at=row.received_at,
            device_id=row.device_id,
            metric=row.metric if isinstance(row, Reading) else "online",
            ts=row.ts,
        )
    )


def _frame_rejected(frame: Frame, error: psycopg.Error | UnencodableRowError) -> DeadLetter:
    """A dead letter for a Sparkplug message whose rows the database refused."""
    return dead_letter(
        Rejection(
            reason=RejectReason.STORAGE_REJECTED,
            detail=f"database refused the message's rows ({error.sqlstate}): {_first_line(error)}",
            topic=frame.topic,
            received_at=frame.received_at,
            payload=frame.payload,
            park_id=frame.address.park_id,
            device_id=frame.address.device_id,
        )
    )


def _first_line(error: Exception) -> str:
    """The first line of an error's message (psycopg adds context lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
