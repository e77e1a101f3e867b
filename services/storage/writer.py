"""The COPY writer: one transaction per batch, idempotent on (device_id, metric, ts).

```
batch (sorted by key) ─COPY─▶ staging_readings (temp)
        the same bytes ─COPY─▶ readings            (savepoint; every row new: fast path)
   23505 unique violation ─▶ back to the savepoint, then
        INSERT … SELECT FROM staging ON CONFLICT DO NOTHING RETURNING ─▶ fresh_readings
rows inserted (staging, or fresh_readings after a conflict) ─▶ device_latest, last seen,
        roll-up pieces (rollups.record_dirty), delivery accounting
```

Most batches hold only new readings, so they go to the hypertable with COPY; a batch that
holds a redelivered reading (or one reading twice) is refused whole by the primary key and
inserted again from the staging table with ``ON CONFLICT DO NOTHING``, skipping what is
stored. Either way only the rows actually
inserted move a device's latest value and its last-seen time and feed the roll-ups, so a
redelivered reading never counts twice. No statement here takes a global lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from operator import attrgetter

import psycopg
from psycopg import errors
from psycopg.copy import AsyncLibpqWriter
from psycopg.rows import TupleRow

from services.core.batching import Batch
from services.core.deadletters import DeadLetter, dead_letter
from services.core.readings import Reading, StatusUpdate
from services.core.sparkplug import SparkplugOutcome
from services.storage import rollups, sparkplug_store
from services.storage.errors import UnencodableRowError
from services.storage.sparkplug_store import SparkplugJudge

logger = logging.getLogger(__name__)

_SETUP_SQL = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    device_id text, metric text, ts timestamptz, value double precision, value_text text,
    received_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fresh_readings (
    device_id text, metric text, ts timestamptz, value double precision, value_text text,
    received_at timestamptz
) ON COMMIT DELETE ROWS;
"""

_COPY_STAGING = (
    "COPY staging_readings (device_id, metric, ts, value, value_text, received_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_STAGING_TYPES = ["text", "text", "timestamptz", "float8", "text", "timestamptz"]
_COPY_READINGS = (
    "COPY readings (device_id, metric, ts, value, value_text, received_at)"
    " FROM STDIN (FORMAT BINARY)"
)
# Rows are copied in key order, so two writers holding the same key (a message redelivered
# to another worker) wait for each other in one order only, never in a cycle.
_KEY = attrgetter("device_id", "metric", "ts")

# Sorted by key so that concurrent writers take index locks in one order (no deadlocks).
_INSERT_FRESH = """
WITH inserted AS (
    INSERT INTO readings (device_id, metric, ts, value, value_text, received_at)
    SELECT device_id, metric, ts, value, value_text, received_at
    FROM staging_readings
    ORDER BY device_id, metric, ts
    ON CONFLICT (device_id, metric, ts) DO NOTHING
    RETURNING device_id, metric, ts, value, value_text, received_at
)
INSERT INTO fresh_readings SELECT * FROM inserted
"""

# The derived statements read the rows the batch inserted from ``{fresh}``: the staging
# table itself after a plain COPY, fresh_readings after the conflict path.
_UPDATE_LATEST = """
INSERT INTO device_latest AS l (device_id, metric, ts, value, value_text, received_at)
SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value, value_text, received_at
FROM {fresh}
ORDER BY device_id, metric, ts DESC
ON CONFLICT (device_id, metric) DO UPDATE
SET ts = excluded.ts, value = excluded.value, value_text = excluded.value_text,
    received_at = excluded.received_at
WHERE excluded.ts > l.ts
"""

_UPDATE_LAST_SEEN = """
INSERT INTO device_status AS s (device_id, last_seen_ts, updated_at)
SELECT device_id, max(ts), now() FROM {fresh} GROUP BY device_id ORDER BY device_id
ON CONFLICT (device_id) DO UPDATE
SET last_seen_ts = excluded.last_seen_ts, updated_at = now()
WHERE s.last_seen_ts IS NULL OR excluded.last_seen_ts > s.last_seen_ts
"""

# Appended, never upserted: a park's current minute would otherwise be a row every worker
# locks until its commit. Readers sum the rows.
_UPDATE_DELIVERY = """
WITH seen AS (
    SELECT device_id, received_at, 1 AS accepted, 0 AS stored FROM staging_readings
    UNION ALL
    SELECT device_id, received_at, 0, 1 FROM {fresh}
)
INSERT INTO delivery_1m (park_id, minute, accepted, stored)
SELECT dv.park_id, date_trunc('minute', seen.received_at), sum(seen.accepted), sum(seen.stored)
FROM seen JOIN devices dv USING (device_id)
GROUP BY 1, 2
"""


@dataclass(frozen=True, slots=True)
class _Derived:
    """The statements that follow a batch's inserted rows in one relation."""

    fresh: str  # the table holding the inserted rows
    latest: str
    last_seen: str
    delivery: str

    @classmethod
    def over(cls, fresh: str) -> _Derived:
        """The statements reading ``fresh``."""
        return cls(
            fresh,
            _UPDATE_LATEST.format(fresh=fresh),
            _UPDATE_LAST_SEEN.format(fresh=fresh),
            _UPDATE_DELIVERY.format(fresh=fresh),
        )


_ALL_NEW = _Derived.over("staging_readings")
_SOME_NEW = _Derived.over("fresh_readings")

_UPDATE_STATUS = """
INSERT INTO device_status AS s (device_id, online, status_ts, status_reason, updated_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (device_id) DO UPDATE
SET online = excluded.online, status_ts = excluded.status_ts,
    status_reason = excluded.status_reason, updated_at = now()
WHERE s.status_ts IS NULL OR excluded.status_ts >= s.status_ts
"""

# A batch's dead letters take their message ids first, so that both tables are written
# with COPY: a message row, then one row per reason refused in it.
_NEXT_MESSAGE_IDS = (
    "SELECT nextval('dead_letter_messages_message_id_seq') FROM generate_series(1, %s)"
)
_COPY_DEAD_LETTER_MESSAGES = (
    "COPY dead_letter_messages (message_id, received_at, payload) FROM STDIN (FORMAT BINARY)"
)
_DEAD_LETTER_MESSAGE_TYPES = ["int8", "timestamptz", "bytea"]
_COPY_DEAD_LETTERS = (
    "COPY dead_letters (message_id, received_at, reason, detail, topic, park_id, device_id,"
    " metric, ts, refused, metrics) FROM STDIN (FORMAT BINARY)"
)
_DEAD_LETTER_TYPES = [
    "int8", "timestamptz", "text", "text", "text", "text", "text", "text", "timestamptz",
    "int4", "text[]",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did."""

    staged: int
    inserted: int
    dead_letters: int  # refused messages written
    statuses: int
    # What the batch's Sparkplug messages became (judged in the transaction), if it had any.
    sparkplug: SparkplugOutcome | None = None

    @property
    def duplicates(self) -> int:
        """Readings already stored, hence not inserted again."""
        return self.staged - self.inserted


class BatchWriter:
    """Writes batches over one async connection; the caller reconnects after a failure."""

    def __init__(self, conninfo: str) -> None:
        """Create a writer; ``connect`` opens the connection."""
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def connected(self) -> bool:
        """Whether a usable connection is open."""
        return self._conn is not None and not self._conn.closed

    async def connect(self) -> None:
        """Open the connection and prepare the session's temporary tables."""
        await self.close()
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=False)
        async with conn.transaction():
            await conn.execute(_SETUP_SQL)
        self._conn = conn

    async def close(self) -> None:
        """Close the connection, ignoring a connection that is already broken."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except psycopg.Error:
                logger.debug("Closing a broken connection failed", exc_info=True)

    async def write(self, batch: Batch, sparkplug: SparkplugJudge | None = None) -> WriteResult:
        """Write one batch in one transaction; ``sparkplug`` judges its Sparkplug messages.

        Raises:
            psycopg.Error: the transaction failed and was rolled back; nothing is stored.
            UnencodableRowError: a value could not even be sent (rolled back too).
        """
        try:
            return await self._write(batch, sparkplug)
        except UnicodeEncodeError as exc:
            # psycopg encodes text itself and cannot encode a lone surrogate.
            raise UnencodableRowError(str(exc)) from exc
        except psycopg.DataError as exc:
            if exc.sqlstate is not None:
                raise
            # Refused by psycopg before sending (a NUL in a text parameter).
            raise UnencodableRowError(str(exc)) from exc

    async def _write(self, batch: Batch, sparkplug: SparkplugJudge | None) -> WriteResult:
        if self._conn is None or self._conn.closed:
            await self.connect()
        conn = self._conn
        if conn is None:
            raise psycopg.OperationalError("no database connection")
        inserted = 0
        outcome: SparkplugOutcome | None = None
        readings: list[Reading] = batch.readings
        statuses: list[StatusUpdate] = batch.statuses
        letters: list[DeadLetter] = batch.dead_letters
        async with conn.transaction(), conn.cursor() as cur:
            if batch.frames:
                if sparkplug is None:
                    raise ValueError("a batch with Sparkplug messages needs their judge")
                # First, so that the edge nodes' rows are locked before any reading is.
                outcome = await sparkplug_store.apply(cur, batch.frames, sparkplug)
                readings = [*readings, *(r for o in outcome.outcomes for r in o.readings)]
                statuses = [*statuses, *(s for o in outcome.outcomes for s in o.statuses)]
                letters = [
                    *letters,
                    *(dead_letter(*o.rejections) for o in outcome.outcomes if o.rejections),
                ]
            if readings:
                inserted, derived = await _insert_readings(conn, cur, readings)
                if inserted:
                    # No global lock: each statement locks its rows in key order, and the
                    # roll-ups are only logged as pieces (folded by maintenance).
                    await cur.execute(derived.latest)
                    await cur.execute(derived.last_seen)
                    await rollups.record_dirty(cur, derived.fresh)
                await cur.execute(derived.delivery)
            if statuses:
                ordered = sorted(statuses, key=lambda s: (s.device_id, s.ts))
                await cur.executemany(
                    _UPDATE_STATUS,
                    [(s.device_id, s.online, s.ts, s.reason.value) for s in ordered],
                )
            if letters:
                await _copy_dead_letters(cur, letters)
        return WriteResult(
            staged=len(readings),
            inserted=inserted,
            dead_letters=len(letters),
            statuses=len(statuses),
            sparkplug=outcome,
        )


class _Recorder(AsyncLibpqWriter):
    """Sends COPY data and keeps it, so that one encoding of a batch can be sent twice."""

    def __init__(self, cursor: psycopg.AsyncCursor[TupleRow]) -> None:
        super().__init__(cursor)
        self.chunks: list[bytes] = []

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(data))
        await super().write(data)


async def _insert_readings(
    conn: psycopg.AsyncConnection, cur: psycopg.AsyncCursor[TupleRow], readings: list[Reading]
) -> tuple[int, _Derived]:
    """Store the batch's new readings; return how many were inserted and where they are."""
    recorder = _Recorder(cur)
    async with cur.copy(_COPY_STAGING, writer=recorder) as copy:
        copy.set_types(_STAGING_TYPES)
        for r in sorted(readings, key=_KEY):
            await copy.write_row((r.device_id, r.metric, r.ts, r.value, r.text, r.received_at))
    try:
        # A savepoint: a refused COPY rolls back alone, the staged rows stay.
        async with conn.transaction(), cur.copy(_COPY_READINGS) as copy:
            for chunk in recorder.chunks:
                await copy.write(chunk)
    except errors.UniqueViolation:
        # 23505: a reading of the batch is stored already (a redelivery) or is in it twice.
        await cur.execute(_INSERT_FRESH)
        return max(cur.rowcount, 0), _SOME_NEW
    return len(readings), _ALL_NEW


async def _copy_dead_letters(cur: psycopg.AsyncCursor[TupleRow], letters: list[DeadLetter]) -> None:
    await cur.execute(_NEXT_MESSAGE_IDS, (len(letters),))
    ids = [int(row[0]) for row in await cur.fetchall()]
    async with cur.copy(_COPY_DEAD_LETTER_MESSAGES) as copy:
        copy.set_types(_DEAD_LETTER_MESSAGE_TYPES)
        for message_id, letter in zip(ids, letters, strict=True):
            await copy.write_row((message_id, letter.received_at, letter.payload))
    async with cur.copy(_COPY_DEAD_LETTERS) as copy:
        copy.set_types(_DEAD_LETTER_TYPES)
        for message_id, letter in zip(ids, letters, strict=True):
            for group in letter.groups:
                await copy.write_row(
                    (
                        message_id,
                        letter.received_at,
                        group.reason.value,
                        group.detail,
                        letter.topic,
                        letter.park_id,
                        letter.device_id,
                        group.metric,
                        group.ts,
                        group.refused,
                        list(group.metrics),
                    )
                )
