"""The COPY writer: one transaction per batch, idempotent on (device_id, metric, ts).

```
batch (sorted by key) ─COPY─▶ readings             (savepoint; every row new: fast path)
        summarized in ingest (core.batch_summary) ─▶ roll-up pieces (rollups.record_summary),
        availability marks, delivery accounting, then device_latest and last seen
   23505 unique violation ─▶ back to the savepoint, then
        the batch ─COPY─▶ staging_readings (temp)
        INSERT … SELECT FROM staging ON CONFLICT DO NOTHING RETURNING ─▶ fresh_readings
        fresh_readings ─▶ the same derived tables, aggregated in SQL (rollups.record_dirty)
```

Most batches hold only new readings, so they go to the hypertable with COPY, and what
follows from them is computed once in this process from the batch it already holds (before,
PostgreSQL read a staged second copy of the batch four times for it). A batch that holds a
redelivered reading (or one reading twice) is refused whole by the primary key and inserted
again from the staging table with ``ON CONFLICT DO NOTHING``, skipping what is stored.
Either way only the rows actually inserted move a device's latest value and its last-seen
time and feed the roll-ups, so a redelivered reading never counts twice. No statement here
takes a global lock. The rows every batch of a device upserts (latest values, last seen)
come last in both paths, so a concurrent writer's batch (another worker's, or this
worker's other connection) waits for them at most from there to the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from operator import attrgetter

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow

from services.core.batch_summary import summarize
from services.core.batching import Batch
from services.core.deadletters import DeadLetter, dead_letter
from services.core.readings import Reading, StatusUpdate
from services.core.sparkplug import SparkplugOutcome
from services.storage import arrays, rollups, sparkplug_store
from services.storage.arrays import float8_array, int8_array, text_array, timestamptz_array
from services.storage.copying import copy_rows
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
_READING_TYPES = ["text", "text", "timestamptz", "float8", "text", "timestamptz"]
# The summary's columns, taken in C.
_DEVICE_ID, _METRIC, _TS = attrgetter("device_id"), attrgetter("metric"), attrgetter("ts")
_VALUE, _TEXT, _RECEIVED_AT = attrgetter("value"), attrgetter("text"), attrgetter("received_at")
_LAST_TS, _MINUTE, _READINGS = attrgetter("last_ts"), attrgetter("minute"), attrgetter("readings")
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

# A device's latest value and last-seen time move forward in measured time only.
_LATEST_INTO = (
    "INSERT INTO device_latest AS l (device_id, metric, ts, value, value_text, received_at)"
)
_LATEST_FORWARD = """
ON CONFLICT (device_id, metric) DO UPDATE
SET ts = excluded.ts, value = excluded.value, value_text = excluded.value_text,
    received_at = excluded.received_at
WHERE excluded.ts > l.ts
"""
_LAST_SEEN_INTO = "INSERT INTO device_status AS s (device_id, last_seen_ts, updated_at)"
_LAST_SEEN_FORWARD = """
ON CONFLICT (device_id) DO UPDATE
SET last_seen_ts = excluded.last_seen_ts, updated_at = now()
WHERE s.last_seen_ts IS NULL OR excluded.last_seen_ts > s.last_seen_ts
"""

# After a conflict, what follows from the rows the batch inserted (fresh_readings).
_FRESH_LATEST = f"""{_LATEST_INTO}
SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value, value_text, received_at
FROM fresh_readings
ORDER BY device_id, metric, ts DESC
{_LATEST_FORWARD}"""

_FRESH_LAST_SEEN = f"""{_LAST_SEEN_INTO}
SELECT device_id, max(ts), now() FROM fresh_readings GROUP BY device_id ORDER BY device_id
{_LAST_SEEN_FORWARD}"""

# Appended, never upserted: a park's current minute would otherwise be a row every worker
# locks until its commit. Readers sum the rows.
_FRESH_DELIVERY = """
WITH seen AS (
    SELECT device_id, received_at, 1 AS accepted, 0 AS stored FROM staging_readings
    UNION ALL
    SELECT device_id, received_at, 0, 1 FROM fresh_readings
)
INSERT INTO delivery_1m (park_id, minute, accepted, stored)
SELECT dv.park_id, date_trunc('minute', seen.received_at), sum(seen.accepted), sum(seen.stored)
FROM seen JOIN devices dv USING (device_id)
GROUP BY 1, 2
"""

# The same, for a batch of new readings, from its summary (rows in key order). Arrays go as
# %b (binary), encoded a column at once (services/storage/arrays.py).
_SUMMARY_LATEST = f"""{_LATEST_INTO}
SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::float8[], %b::text[],
                     %b::timestamptz[])
{_LATEST_FORWARD}"""

_SUMMARY_LAST_SEEN = f"""{_LAST_SEEN_INTO}
SELECT device_id, last_seen_ts, now()
FROM unnest(%b::text[], %b::timestamptz[]) AS u(device_id, last_seen_ts)
{_LAST_SEEN_FORWARD}"""

_SUMMARY_DELIVERY = """
INSERT INTO delivery_1m (park_id, minute, accepted, stored)
SELECT dv.park_id, u.minute, sum(u.readings), sum(u.readings)
FROM unnest(%b::text[], %b::timestamptz[], %b::int8[]) AS u(device_id, minute, readings)
JOIN devices dv USING (device_id)
GROUP BY 1, 2
"""

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
        arrays.register(conn)
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
                # No global lock: each statement locks its rows in key order, and the
                # roll-ups are only logged as pieces (folded by maintenance).
                inserted = await _insert_readings(conn, cur, readings)
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


async def _insert_readings(
    conn: psycopg.AsyncConnection, cur: psycopg.AsyncCursor[TupleRow], readings: list[Reading]
) -> int:
    """Store the batch's new readings and what follows from them; return how many."""
    try:
        # Readings compare as tuples, key first: while no key is in the batch twice, their
        # own order is the key order, and cheaper than a key a reading. (Two readings of one
        # key would be ordered by value, or not at all, where None meets a number.)
        ordered = sorted(readings)
    except TypeError:
        ordered = sorted(readings, key=_KEY)
    try:
        # A savepoint: a refused COPY rolls back alone.
        async with conn.transaction():
            await _copy_readings(cur, _COPY_READINGS, ordered)
    except errors.UniqueViolation:
        # 23505: a reading of the batch is stored already (a redelivery) or is in it twice;
        # readings of one key are staged in the order they arrived, as the key sort keeps.
        return await _insert_fresh(cur, sorted(readings, key=_KEY))
    summary = summarize(ordered)
    latest, devices, delivered = summary.latest, summary.devices, summary.delivered
    await rollups.record_summary(cur, summary)
    await cur.execute(
        _SUMMARY_DELIVERY,
        (
            text_array(map(_DEVICE_ID, delivered)),
            timestamptz_array(map(_MINUTE, delivered)),
            int8_array(map(_READINGS, delivered)),
        ),
    )
    # The rows every batch of these devices upserts come last: another writer's batch
    # waits for them only from here to this commit.
    await cur.execute(
        _SUMMARY_LATEST,
        (
            text_array(map(_DEVICE_ID, latest)),
            text_array(map(_METRIC, latest)),
            timestamptz_array(map(_TS, latest)),
            float8_array(map(_VALUE, latest)),
            text_array(map(_TEXT, latest)),
            timestamptz_array(map(_RECEIVED_AT, latest)),
        ),
    )
    await cur.execute(
        _SUMMARY_LAST_SEEN,
        (text_array(map(_DEVICE_ID, devices)), timestamptz_array(map(_LAST_TS, devices))),
    )
    return len(ordered)


async def _insert_fresh(cur: psycopg.AsyncCursor[TupleRow], ordered: list[Reading]) -> int:
    """Insert what is new of a batch holding stored keys, through the staging table."""
    await _copy_readings(cur, _COPY_STAGING, ordered)
    await cur.execute(_INSERT_FRESH)
    inserted = max(cur.rowcount, 0)
    await cur.execute(_FRESH_DELIVERY)
    if inserted:  # rows locked in the fast path's order: latest values and last seen last
        await rollups.record_dirty(cur, "fresh_readings")
        await cur.execute(_FRESH_LATEST)
        await cur.execute(_FRESH_LAST_SEEN)
    return inserted


async def _copy_readings(
    cur: psycopg.AsyncCursor[TupleRow], statement: str, ordered: list[Reading]
) -> None:
    """COPY readings, in the given order, with ``statement`` (``_COPY_READINGS``/``_STAGING``)."""
    async with cur.copy(statement) as copy:
        copy.set_types(_READING_TYPES)
        # A Reading is its own row: its fields are the statements' columns, in order.
        await copy_rows(copy, ordered)


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
