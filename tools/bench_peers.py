"""``parksense bench-peers``: issue 10's load against parksense and a tuned mq-bridge, side by side.

One invocation starts a stack of its own (own state folder, own ports), loads the bench
fleet, installs the peer in its own venv, and runs the designs interleaved (parksense,
peer, parksense, …) on the same broker, PostgreSQL cluster and publisher. Each run
publishes pre-built QoS 1 PUBLISH packets over a plain socket (at most 2,000
unacknowledged), follows progress once a second from PostgreSQL's per-table insert
counters (O(chunks), whatever the run's length), and measures CPU from /proc. After the
run, what landed is counted exactly (distinct messages over the run's rows) and the
last landed row's time is its commit timestamp (``track_commit_timestamp``, on in the
bench's cluster only), beside ``pg_stat_statements``' account of the run. Only
one design consumes at a time: ingest is stopped (and its session cleared) while the peer
runs, and the peer connects with the ingest credential under ``parksense.ingest.peer``.
Everything it started is stopped by pid at the end; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import select
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from services.access.fleet import load_fleet_in_force
from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.core.access import CredentialKind, PlatformRole, client_id, username
from services.stack.processes import pid_alive, spawn, terminate
from services.stack.stack import (
    Stack,
    check_installed,
    ingest_client_id,
    platform_mqtt_settings,
)
from services.storage.rollups import ROLLUP_LOCK_KEY
from tools.bench import machine_facts
from tools.mqtt_packets import (
    DISCONNECT,
    PUBACK,
    PacketReader,
    connack_code,
    connect_packet,
)
from tools.peer_bridge import (
    PEER_TABLE,
    create_table,
    ensure_installed,
    peer_python,
    route_config,
    write_runner,
)
from tools.peer_load import (
    DEVICE_PREFIX,
    DEVICES,
    MESSAGES,
    LoadWindow,
    bench_fleet,
    device_topics,
    message_packets,
    paced_packets,
)
from tools.peer_stats import (
    BENCH_TAG,
    PEER,
    READINGS_PER_MESSAGE,
    LatencyResult,
    RunResult,
    Sample,
    StatementCost,
    group_statements,
    histogram_quantile,
    landed_span_s,
    last_growth_s,
    median_run,
    render_latency,
    render_runs,
    render_statements,
    render_summary,
    summarise,
)

logger = logging.getLogger(__name__)

# parksense with one ingest worker, with two (a shared subscription), and the peer.
DESIGNS = ("parksense", "parksense-2w", "peer")
WORKERS = {"parksense": 1, "parksense-2w": 2}
QUICK_MESSAGES = 20_000
MAX_MESSAGES = 2_000_000
MAX_RUNS = 9
# The bound on unacknowledged messages, and how much is written per send.
MAX_UNACKED = 2000
SEND_CHUNK_BYTES = 256 * 1024
SAMPLE_INTERVAL_S = 1.0
# Progress that has not moved for this long (or reached what was acked) is checked with an
# exact count: the insert counters also count rows of rolled-back COPYs and doubles.
EXACT_CHECK_STILL_S = 2.0
# The bench's cluster, beside the product's defaults: commit timestamps (the last landed
# row's time) and pg_stat_statements (where PostgreSQL's time goes). A cluster left running
# by an earlier `--keep-stack` without them is refused (both need a restart).
BENCH_POSTGRES_SETTINGS: Mapping[str, str | int] = {
    "track_commit_timestamp": "on",
    "shared_preload_libraries": "timescaledb,pg_stat_statements",
    "pg_stat_statements.track": "top",
}
# The bench's own sessions never start parallel workers: those would not be left out of
# the PostgreSQL CPU figure with the session's backend.
BENCH_SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0"
TOP_STATEMENTS = 12
# A run has landed when the count reaches what was acked, or stays still this long. Long
# enough to ride out a consumer's reconnect (mq-bridge waits 5 s, then redelivers): a run
# cut short by a stall would count what was still queued at the broker as lost.
STILL_S = 60.0
RUN_TIMEOUT_S = 900.0
PROBE_TIMEOUT_S = 60.0
PROBE_REPEAT_S = 2.0
CONNECT_TIMEOUT_S = 10.0
PEER_CLIENT_NAME = "peer"
PUBLISHER_CLIENT_NAME = "benchpeers"
# Timestamps lie this far before the bench starts, so nothing is in the future.
PAST_MARGIN_MS = 3_600_000
# An earlier invocation's rows overlap this one's windows: its raw readings, and all that
# was derived from them. Left in place (only raw readings were deleted before), its newer
# latest values turned every device_latest upsert into a no-op and its stored minutes
# overlapped every new piece, so the fold re-aggregated them from raw rows: parksense
# measured cheaper and costlier than it is. The bench database is the bench's own.
FRESH_START_SQL = """
TRUNCATE readings, readings_1m, readings_15m, park_1m, park_metric_1m, park_1h,
    park_signals_1m, device_latest, device_status, device_status_events,
    device_availability, availability_dirty, rollup_dirty, delivery_1m, dead_letters,
    dead_letter_messages
"""
# The stack's maintenance process runs meanwhile: the fold is kept out by its lock, and a
# deadlock with another reader (TRUNCATE locks the tables one by one) is tried again.
FRESH_START_ATTEMPTS = 5
# The paced run (publish → commit): half the design's median landed rate, this long.
PACED_FRACTION = 0.5
PACED_S = 30.0
PACED_TICK_S = 0.005
PACED_LEAD_MS = 3000
# Roll-up lag (age of the oldest committed piece not folded yet) and the ingest backends'
# wait events, each with whether what it waits for is another worker's backend, or another
# connection of its own worker (its other writer; a worker's connections share one
# application_name, ``ingest:<client id>``).
ROLLUP_LAG_SQL = "SELECT extract(epoch FROM now() - min(committed_at)) FROM rollup_dirty"
# Where the cluster's WAL ends, and the checkpoints it has begun (timed or requested;
# PostgreSQL 17 moved the counters to pg_stat_checkpointer).
WAL_SQL = (
    "SELECT /* bench-peers */ pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
    " checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
)
CHECKPOINTER_VIEW_SINCE = 170000  # server_version_num
WAL_SQL_17 = (
    "SELECT /* bench-peers */ pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
    " num_timed + num_requested FROM pg_stat_checkpointer"
)
# A wait for the relation extension lock: another backend adds a page to the same table
# or index (PostgreSQL 15 extends an index a page at a time under it): a wait on a file,
# not on the other worker's rows or transaction.
EXTEND_WAIT = "Lock:extend"
WAITS_SQL = """
SELECT coalesce(a.wait_event_type, 'CPU') || ':' || coalesce(a.wait_event, '-'),
       EXISTS (
           SELECT 1 FROM pg_stat_activity o
           WHERE o.pid = ANY(pg_blocking_pids(a.pid)) AND o.application_name LIKE 'ingest:%%'
             AND o.application_name <> a.application_name
       ),
       EXISTS (
           SELECT 1 FROM pg_stat_activity o
           WHERE o.pid = ANY(pg_blocking_pids(a.pid)) AND o.application_name = a.application_name
       )
FROM pg_stat_activity a
WHERE a.application_name LIKE 'ingest:%%' AND a.state = 'active'
"""


class BenchPeersError(Exception):
    """The benchmark cannot go on; the message says why."""


# -- /proc ----------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int, *, with_reaped_children: bool = False) -> float:
    """Return the CPU seconds of ``pid`` (user + system), plus its reaped children's."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # Fields 14-17 of proc(5): utime, stime, cutime, cstime; this list starts at field 3.
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children_of(parent: int) -> list[int]:
    """Return the pids whose parent is ``parent``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


def postgres_cpu_s(postmaster: int, exclude: set[int]) -> float:
    """CPU of the cluster: postmaster (with exited backends) and live backends but ``exclude``."""
    total = process_cpu_s(postmaster, with_reaped_children=True)
    return total + sum(process_cpu_s(p) for p in children_of(postmaster) if p not in exclude)


def peak_rss_mib(pid: int, field_name: str = "VmHWM") -> float | None:
    """Return the peak resident memory (VmHWM) of ``pid``, or another ``/proc`` size field."""
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        if match := re.search(rf"^{field_name}:\s+(\d+)\s+kB", status, re.MULTILINE):
            return int(match.group(1)) / 1024
    return None


def rss_mib(pids: list[int]) -> float | None:
    """Return the resident memory (VmRSS) of ``pids`` together."""
    sizes = [peak_rss_mib(p, "VmRSS") for p in pids]
    known = [v for v in sizes if v is not None]
    return sum(known) if known else None


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    return "n/a"


# -- MQTT -----------------------------------------------------------------------------


def _open(host: str, port: int, packet: bytes) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(packet)
    reader = PacketReader()
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        data = sock.recv(4096)
        if not data:
            break
        packets = reader.feed(data)
        if packets:
            code = connack_code(packets[0])
            if code:
                sock.close()
                raise BenchPeersError(f"the broker refused the connection (CONNACK {code})")
            return sock
    sock.close()
    raise BenchPeersError(f"no CONNACK from {host}:{port}")


def clear_session(host: str, port: int, user: str, password: str, client: str) -> None:
    """Discard the broker's session of ``client`` (MQTT 3.1.1 clean session, section 3.1.2.4)."""
    packet = connect_packet(client, username=user, password=password, clean_session=True)
    with _open(host, port, packet) as sock:
        sock.sendall(DISCONNECT)


@dataclass(slots=True)
class PublishOutcome:
    """What the publisher did: when it started and how many messages were acknowledged.

    ``started`` is monotonic (the bench's own intervals); ``started_wall_s`` is the same
    moment on the wall clock, which commit timestamps are compared with.
    """

    started: float
    started_wall_s: float
    sent: int = 0
    acked: int = 0
    finished: float | None = None
    cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def publish(
    host: str,
    port: int,
    connect: bytes,
    packets: list[bytes],
    *,
    max_unacked: int,
    deadline: float,
    rate_per_s: float | None = None,
) -> PublishOutcome:
    """Write ``packets`` as fast as the broker acknowledges, at most ``max_unacked`` pending.

    With ``rate_per_s``, packet i is not written before i / rate seconds after the start.
    """
    sock = _open(host, port, connect)
    sock.settimeout(0.0)  # non-blocking
    reader = PacketReader()
    out = bytearray()
    queued = 0
    outcome = PublishOutcome(started=time.monotonic(), started_wall_s=time.time())
    cpu_started = time.thread_time()
    total = len(packets)
    try:
        while outcome.acked < total and time.monotonic() < deadline:
            due = total
            if rate_per_s is not None:
                due = min(total, int((time.monotonic() - outcome.started) * rate_per_s) + 1)
            while queued < due and queued - outcome.acked < max_unacked:
                if len(out) >= SEND_CHUNK_BYTES:
                    break
                out += packets[queued]
                queued += 1
            writable = [sock] if out else []
            wait_s = 0.5 if rate_per_s is None else PACED_TICK_S
            readable, ready, _ = select.select([sock], writable, [], wait_s)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    del out[: sock.send(out)]
            if readable:
                data = sock.recv(1 << 16)
                if not data:
                    outcome.errors.append("the broker closed the publisher's connection")
                    break
                outcome.acked += sum(p.kind == PUBACK for p in reader.feed(data))
        outcome.sent = queued
        outcome.finished = time.monotonic()
        outcome.cpu_s = time.thread_time() - cpu_started
        with contextlib.suppress(OSError):
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.sendall(DISCONNECT)
    finally:
        sock.close()
    return outcome


# -- database sampling ----------------------------------------------------------------


class StatementsMode(StrEnum):
    """Which runs get a pg_stat_statements table in the report."""

    MEDIAN = "median"  # each design's run with the median landed rate
    ALL = "all"
    OFF = "off"


# Rows inserted into a hypertable's chunks so far, from the statistics system: O(chunks),
# never a scan. A backend reports its counts at most once a second (and within 10 s of
# going idle), rows of rolled-back transactions included: progress, not the figure.
PROGRESS_SQL = f"""{BENCH_TAG}
SELECT coalesce(sum(pg_stat_get_tuples_inserted(inhrelid)), 0)::bigint
FROM pg_inherits WHERE inhparent = %s::regclass
"""


def bench_connect(conninfo: str) -> psycopg.Connection:
    """Open one of the bench's own sessions (autocommit, no parallel workers)."""
    return psycopg.connect(conninfo, autocommit=True, options=BENCH_SESSION_OPTIONS)


def _table(design: str) -> str:
    return PEER_TABLE if design == PEER else "readings"


def _rows_per_message(design: str) -> int:
    return 1 if design == PEER else READINGS_PER_MESSAGE


class Sampler(threading.Thread):
    """Follows a run's progress once a second until told to stop; the cost does not grow."""

    def __init__(self, conninfo: str, design: str, t0: float) -> None:
        """Open its own connection (its backend's CPU is left out of the figures).

        For parksense, each sample also reads the roll-up lag and ingest's wait events.
        """
        super().__init__(name="bench-peers-sampler", daemon=True)
        self.conn = bench_connect(conninfo)
        self.backend_pid = self.conn.info.backend_pid
        self.table = _table(design)
        self.rows_per_message = _rows_per_message(design)
        self.t0 = t0
        self.ingest = design != PEER
        self.baseline = self.inserted()
        self.samples: list[Sample] = []
        self.rollup_lag_s: list[float] = []
        self.waits: Counter[str] = Counter()
        self.wait_samples = 0
        self.waits_on_other_worker = 0
        self.waits_on_own_writer = 0
        self.other_worker_extending = 0
        self.stop_event = threading.Event()

    def inserted(self) -> int:
        """Return the rows inserted into the design's table so far (the counters)."""
        row = self.conn.execute(PROGRESS_SQL, (self.table,)).fetchone()
        return int(row[0]) if row else 0

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stop_event.is_set():
            at = time.monotonic() - self.t0
            messages = (self.inserted() - self.baseline) // self.rows_per_message
            self.samples.append(Sample(at, messages))
            if self.ingest:
                self._sample_ingest()
            self.stop_event.wait(SAMPLE_INTERVAL_S)

    def _sample_ingest(self) -> None:
        row = self.conn.execute(ROLLUP_LAG_SQL).fetchone()
        self.rollup_lag_s.append(float(row[0]) if row and row[0] is not None else 0.0)
        self.wait_samples += 1
        for event, on_other_worker, on_own_writer in self.conn.execute(WAITS_SQL).fetchall():
            self.waits[str(event)] += 1
            self.waits_on_other_worker += bool(on_other_worker)
            self.other_worker_extending += bool(on_other_worker) and event == EXTEND_WAIT
            self.waits_on_own_writer += bool(on_own_writer)

    def close(self) -> None:
        """Stop sampling and close the connection."""
        self.stop_event.set()
        if self.ident is not None:  # started
            self.join(10)
        self.conn.close()


def _landed_query(design: str) -> str:
    """Return the probe's count of messages in a window (a one-message window: cheap)."""
    if design != PEER:
        # One power_kw reading per message; (device, metric, ts) is unique.
        return (
            f"{BENCH_TAG} SELECT count(*) FROM readings WHERE ts >= %s AND ts < %s"
            " AND metric = 'power_kw' AND device_id LIKE %s"
        )
    return f"{BENCH_TAG} SELECT count(*) FROM {PEER_TABLE} WHERE ts >= %s AND ts < %s"


@dataclass(frozen=True, slots=True)
class Landed:
    """What a run stored, counted exactly: distinct messages, rows, the last commit."""

    messages: int
    rows: int
    last_commit_ts: datetime | None


def _final_counts(
    conn: psycopg.Connection, design: str, params: tuple[object, ...], *, with_commit: bool = True
) -> Landed:
    """Count the run's rows exactly; with ``with_commit``, also the last one's commit time.

    The commit time needs ``track_commit_timestamp``; it is wall clock (``now()`` of the
    committing transaction's end).
    """
    commit = "max(pg_xact_commit_timestamp(xmin))" if with_commit else "NULL::timestamptz"
    # GROUP BY (a hash aggregate) rather than count(DISTINCT (…)), which sorts records:
    # the same figures, ten times faster (76 vs 837 ms over 100,000 rows on the bench machine).
    if design != PEER:
        where = "FROM readings WHERE ts >= %s AND ts < %s AND device_id LIKE %s"
        key = "device_id, ts"
    else:
        where = f"FROM {PEER_TABLE} WHERE ts >= %s AND ts < %s"
        key = "topic, seq"
    sql = (
        f"{BENCH_TAG} SELECT count(*), coalesce(sum(n), 0), max(c) FROM"
        f" (SELECT count(*) AS n, {commit} AS c {where} GROUP BY {key}) AS m"
    )
    row = conn.execute(sql, params).fetchone()
    if row is None:
        return Landed(0, 0, None)
    return Landed(int(row[0]), int(row[1]), row[2])


STATEMENTS_SQL = """
SELECT query, calls, total_exec_time, rows FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
"""


def prepare_instrumentation(conn: psycopg.Connection) -> None:
    """Check the bench's server settings are in force; create pg_stat_statements.

    Raises:
        BenchPeersError: The cluster runs without them (started earlier without them).
    """
    track = conn.execute("SHOW track_commit_timestamp").fetchone()
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    if not track or track[0] != "on" or not preload or "pg_stat_statements" not in preload[0]:
        raise BenchPeersError(
            "the bench's PostgreSQL runs without track_commit_timestamp and"
            " pg_stat_statements (started earlier without them, e.g. by --keep-stack):"
            " stop it (`parksense down` with the bench's state folder) and run again"
        )
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset_statements(conn: psycopg.Connection) -> None:
    """Forget every statement's figures, so what is read next belongs to one run."""
    conn.execute("SELECT pg_stat_statements_reset()")


def read_statements(conn: psycopg.Connection) -> list[StatementCost]:
    """Return every statement since the reset, the same text added up, by total time."""
    rows = conn.execute(STATEMENTS_SQL).fetchall()
    return group_statements(
        [StatementCost(str(q), int(c), float(t), int(r)) for q, c, t, r in rows]
    )


# -- the bench ------------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    """Everything one invocation holds: the stack, credentials, the peer and its process."""

    args: argparse.Namespace
    stack: Stack  # one ingest worker
    stacks: dict[int, Stack]  # the same stack, by number of ingest workers
    conninfo: str
    topics: list[str]
    publisher_connect: bytes
    ingest_password: str
    peer_argv: list[str]
    peer_pid: int | None = None
    probes: int = 0

    @property
    def host(self) -> str:
        """The broker's address."""
        return str(self.stack.mqtt.host)

    @property
    def port(self) -> int:
        """The broker's port."""
        return int(self.stack.mqtt.port)

    def ingest_pids(self) -> list[int]:
        """Return the pids of the ingest workers that run."""
        workers = max(self.stacks)
        return [p for w in range(1, workers + 1) if (p := self.stack.ingest_worker(w).pid)]

    def stop_ingest(self) -> None:
        """Stop every ingest worker and drop its session (a plain or a shared subscription)."""
        for worker in range(1, max(self.stacks) + 1):
            self.stack.ingest_worker(worker).stop()
            clear_session(
                self.host, self.port, _ingest_user(), self.ingest_password, ingest_client_id(worker)
            )

    def use_parksense(self, workers: int) -> None:
        """Stop the peer and drop its session; start ``workers`` ingest workers."""
        self.stop_peer()
        running = self.ingest_pids()
        if len(running) != workers:
            self.stop_ingest()
        self.stacks[workers].up()

    def use_peer(self) -> None:
        """Stop ingest and drop its session (so the peer's load never queues for it)."""
        self.stop_ingest()
        if self.peer_pid is None or not pid_alive(self.peer_pid):
            log = self.stack.logs_dir / "peer.log"
            self.peer_pid = spawn(
                [str(peer_python(self.args.peer_venv)), *self.peer_argv],
                log_file=log,
                # mq-bridge logs nothing by default; its reconnects are worth seeing.
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
                cwd=self.stack.state_dir,
            )
            logger.info("Started the peer (pid %d), log %s", self.peer_pid, log)

    def stop_peer(self) -> None:
        """Stop the peer (by its pid) and drop its persistent session."""
        if self.peer_pid is not None:
            terminate(self.peer_pid, 10.0)
            self.peer_pid = None
        clear_session(
            self.host,
            self.port,
            _ingest_user(),
            self.ingest_password,
            client_id(_ingest_user(), PEER_CLIENT_NAME),
        )

    def probe(self, design: str, base_ms: int) -> None:
        """Publish one message before the run's window and wait until it lands.

        Proves the consumer is subscribed: what is published before that would be lost.

        Raises:
            BenchPeersError: It did not land in time.
        """
        self.probes += 1
        start = base_ms - PAST_MARGIN_MS + self.probes * 1000
        window = LoadWindow(start_ms=start, count=1, devices=len(self.topics))
        packets = message_packets(self.topics, window, with_topic=design == PEER)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        params = _params(design, window)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while time.monotonic() < deadline:
                # Again and again: what is published before the consumer subscribes is lost.
                publish(
                    self.host,
                    self.port,
                    self.publisher_connect,
                    packets,
                    max_unacked=1,
                    deadline=deadline,
                )
                until = min(time.monotonic() + PROBE_REPEAT_S, deadline)
                while time.monotonic() < until:
                    row = conn.execute(_landed_query(design), params).fetchone()
                    if row and row[0]:
                        return
                    time.sleep(0.2)
        raise BenchPeersError(
            f"{design} did not store a probe message within {PROBE_TIMEOUT_S:g} s"
        )

    def consumer_pids(self, design: str) -> list[int]:
        """Return the pids of the processes that consume for ``design``."""
        if design != PEER:
            return self.ingest_pids()
        return [self.peer_pid] if self.peer_pid is not None else []


def _ingest_user() -> str:
    return username(CredentialKind.PLATFORM, PlatformRole.INGEST.value)


def _params(design: str, window: LoadWindow) -> tuple[object, ...]:
    start = _ts(window.start_ms)
    end = _ts(window.end_ms)
    if design != PEER:
        return (start, end, f"{DEVICE_PREFIX}%")
    return (start, end)


def _ts(ms: int) -> object:
    from datetime import UTC, datetime  # noqa: PLC0415 - only here

    return datetime.fromtimestamp(ms / 1000, UTC)


def _cpu(bench: Bench, design: str, exclude: set[int]) -> dict[str, float]:
    broker = bench.stack.broker.pid
    postmaster = bench.stack.postgres.pid
    return {
        "broker": process_cpu_s(broker) if broker else 0.0,
        "consumer": sum(process_cpu_s(p) for p in bench.consumer_pids(design)),
        "postgres": postgres_cpu_s(postmaster, exclude) if postmaster else 0.0,
    }


def _wal(conn: psycopg.Connection) -> tuple[float, int]:
    """Bytes of WAL written since the cluster began, and checkpoints begun (``WAL_SQL``)."""
    row = conn.execute(
        WAL_SQL_17 if conn.info.server_version >= CHECKPOINTER_VIEW_SINCE else WAL_SQL
    ).fetchone()
    return (float(row[0]), int(row[1])) if row else (0.0, 0)


def run_once(bench: Bench, design: str, number: int, window: LoadWindow, base_ms: int) -> RunResult:
    """Run one design once on ``window``'s messages, as fast as it goes; return the figures."""
    packets = message_packets(bench.topics, window, with_topic=design == PEER)
    return _run(bench, design, number, packets, _params(design, window), base_ms)


def _use(bench: Bench, design: str) -> None:
    if design == PEER:
        bench.use_peer()
    else:
        bench.use_parksense(WORKERS[design])


def _run(
    bench: Bench,
    design: str,
    number: int,
    packets: list[bytes],
    params: tuple[object, ...],
    base_ms: int,
    rate_per_s: float | None = None,
    start_wall_s: float | None = None,
) -> RunResult:
    """Run ``packets``; a paced run has its consumer ready and starts at ``start_wall_s``."""
    if start_wall_s is None:
        _use(bench, design)
        bench.probe(design, base_ms)
    else:
        time.sleep(max(0.0, start_wall_s - time.time()))
    batches_before = batch_totals(bench) if design != PEER else None
    # The bench's checks and the sampler run in sessions of their own, left out of the CPU.
    with bench_connect(bench.conninfo) as checker:
        reset_statements(checker)
        t0 = time.monotonic()
        sampler = Sampler(bench.conninfo, design, t0)
        exclude = {sampler.backend_pid, checker.info.backend_pid}
        before = _cpu(bench, design, exclude)
        wal_before = _wal(checker)
        rss_start = rss_mib(bench.consumer_pids(design))
        deadline = t0 + bench.args.run_timeout_s
        sampler.start()
        outcome = publish(
            bench.host,
            bench.port,
            bench.publisher_connect,
            packets,
            max_unacked=bench.args.max_unacked,
            deadline=deadline,
            rate_per_s=rate_per_s,
        )
        _wait_landed(checker, sampler, design, params, outcome.acked, deadline)
        after = _cpu(bench, design, exclude)
        wal_after = _wal(checker)
        sampler.close()
        statements = read_statements(checker)
        pids = bench.consumer_pids(design)
        rows_per_batch = None
        if batches_before is not None:
            rows_after, batches_after = batch_totals(bench)
            if batches_after > batches_before[1]:
                rows_per_batch = (rows_after - batches_before[0]) / (
                    batches_after - batches_before[1]
                )
        final = _final_counts(checker, design, params)
    landed = final.messages
    span_s = landed_span_s(outcome.started_wall_s, final.last_commit_ts)
    peaks = [v for p in pids if (v := peak_rss_mib(p)) is not None]
    result = RunResult(
        design=design,
        run=number,
        published=outcome.sent,
        acked=outcome.acked,
        landed=landed,
        stored_rows=final.rows,
        span_s=span_s,
        cpu_s={k: after[k] - before[k] for k in after},
        publisher_cpu_s=outcome.cpu_s,
        publish_s=(outcome.finished or t0) - outcome.started,
        peak_rss_mib=max(peaks, default=None),
        notes=outcome.errors,
        rss_start_mib=rss_start,
        rss_end_mib=rss_mib(pids),
        rollup_lag_s=sampler.rollup_lag_s,
        waits=sampler.waits,
        wait_samples=sampler.wait_samples,
        waits_on_other_worker=sampler.waits_on_other_worker,
        waits_on_own_writer=sampler.waits_on_own_writer,
        other_worker_extending=sampler.other_worker_extending,
        rows_per_batch=rows_per_batch,
        wal_bytes=wal_after[0] - wal_before[0],
        checkpoints=wal_after[1] - wal_before[1],
        statements=statements,
    )
    if landed < outcome.acked:
        result.notes.append(
            f"ended after {STILL_S:g} s without a new row, {outcome.acked - landed:,} short"
            " (stalled or lost: what the broker still held for the session is discarded next)"
        )
    logger.warning(
        "Run %d %s: %d acked, %d landed in %.1f s",
        number,
        design,
        result.acked,
        landed,
        span_s or 0,
    )
    return result


def _wait_landed(
    conn: psycopg.Connection,
    sampler: Sampler,
    design: str,
    params: tuple[object, ...],
    acked: int,
    deadline: float,
) -> None:
    """Wait until every acked message has landed, or nothing landed for STILL_S (bounded).

    The sampler's counters say when to look; an exact count (a scan of the run's rows, so
    only when progress reached ``acked`` or stood still) says whether it is so.
    """
    checked_at: int | None = None  # progress when the exact count last ran
    next_check = 0.0
    while time.monotonic() < deadline:
        samples = list(sampler.samples)
        grown = last_growth_s(samples)
        still_s = samples[-1].at_s - grown if samples and grown is not None else 0.0
        looks_done = samples and (samples[-1].messages >= acked or still_s >= EXACT_CHECK_STILL_S)
        if looks_done and samples[-1].messages != checked_at and time.monotonic() >= next_check:
            checked_at = samples[-1].messages
            next_check = time.monotonic() + EXACT_CHECK_STILL_S
            if _final_counts(conn, design, params, with_commit=False).messages >= acked:
                return
        if still_s >= STILL_S:
            return
        time.sleep(SAMPLE_INTERVAL_S / 2)


def _ingest_samples(bench: Bench, family_name: str) -> list[tuple[str, dict[str, str], float]]:
    """Return the samples of one metric family from every running ingest worker."""
    out = []
    for worker in range(1, len(bench.ingest_pids()) + 1):
        port = bench.stack.ingest_metrics_port(worker)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode("utf-8")
        out += [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            if family.name == family_name
            for sample in family.samples
        ]
    return out


def commit_lag_buckets(bench: Bench) -> dict[float, float]:
    """Return ingest's publish → commit histogram, summed over the running workers.

    ``parksense_ingest_commit_lag_seconds`` observes commit time minus a reading's measured
    time; the paced load's readings are measured when they are published.
    """
    buckets: dict[float, float] = {}
    for name, labels, value in _ingest_samples(bench, "parksense_ingest_commit_lag_seconds"):
        if name.endswith("_bucket"):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def batch_totals(bench: Bench) -> tuple[float, float]:
    """Return (rows, batches) ingest's workers have committed so far."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for name, _, value in _ingest_samples(bench, "parksense_ingest_batch_rows"):
        for suffix in totals:
            if name.endswith(suffix):
                totals[suffix] += value
    return totals["_sum"], totals["_count"]


def paced_run(bench: Bench, design: str, rate_per_s: float, base_ms: int) -> LatencyResult:
    """Publish at ``rate_per_s`` with readings measured at their publish time; read p50/p99."""
    count = max(1, int(rate_per_s * PACED_S))
    _use(bench, design)
    bench.probe(design, base_ms)
    before = commit_lag_buckets(bench)
    # Message i is measured at start + i / rate and published then (the packets are built
    # first; the publisher waits for the start).
    start_ms = time.time_ns() // 1_000_000 + PACED_LEAD_MS
    packets = paced_packets(bench.topics, start_ms, count, rate_per_s)
    window = (_ts(start_ms), _ts(start_ms + int(count * 1000 / rate_per_s) + 1000))
    params = (*window, f"{DEVICE_PREFIX}%")
    result = _run(bench, design, 0, packets, params, base_ms, rate_per_s, start_ms / 1000)
    after = commit_lag_buckets(bench)
    return LatencyResult(
        design=design,
        rate_msg_s=rate_per_s,
        messages=count,
        landed=result.landed,
        p50_s=histogram_quantile(before, after, 0.5),
        p99_s=histogram_quantile(before, after, 0.99),
    )


def fresh_start(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Empty the bench database's data tables (``FRESH_START_SQL``) beside a running stack.

    Raises:
        BenchPeersError: every attempt ended in a deadlock.
    """
    for attempt in range(1, FRESH_START_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
                conn.execute(FRESH_START_SQL)
        except psycopg.errors.DeadlockDetected:
            logger.info("Emptying the bench database deadlocked (attempt %d); again", attempt)
            time.sleep(0.2 * attempt)
        else:
            return
    raise BenchPeersError("could not empty the bench database: it deadlocked every time")


def _database_url(db: DatabaseSettings) -> str:
    """Return ``db`` as the peer's ``postgres://`` URL, its password quoted."""
    secret = "" if db.password is None else ":" + quote(db.password.get_secret_value(), safe="")
    return f"postgres://{quote(db.user, safe='')}{secret}@{db.host}:{db.port}/{db.name}"


def _prepare(args: argparse.Namespace) -> tuple[Bench, list[str]]:
    check_installed()
    state_dir = args.state_dir.absolute()
    stack = Stack(
        StackSettings(
            state_dir=state_dir, ingest_workers=1, ingest_metrics_base_port=args.metrics_port
        ),
        DatabaseSettings(port=args.db_port),
        MqttSettings(port=args.mqtt_port),
        ApiSettings(port=args.api_port),
        postgres_settings=BENCH_POSTGRES_SETTINGS,
    )
    started = stack.up()
    try:
        bench = _bench_on(args, stack, state_dir)
    except BaseException:
        # Died before the runs (e.g. at the fresh start): stop what this invocation started.
        if not args.keep_stack:
            _stop_stack(stack, started)
        raise
    return bench, started


def _bench_on(args: argparse.Namespace, stack: Stack, state_dir: Path) -> Bench:
    """Load the bench fleet and prepare the database, the publisher and the peer on ``stack``."""
    conninfo = stack.db.conninfo(application_name="parksense-bench-peers")
    fleet = bench_fleet()
    load_fleet_in_force(conninfo, fleet, stack.broker_sync())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        prepare_instrumentation(conn)
        create_table(conn)
        fresh_start(conn)
    simulator = platform_mqtt_settings(state_dir, PlatformRole.SIMULATOR, MqttSettings())
    ingest = platform_mqtt_settings(state_dir, PlatformRole.INGEST, MqttSettings())
    if simulator.password is None or ingest.password is None or simulator.username is None:
        raise BenchPeersError(f"no platform credentials under {state_dir}/secrets")
    ingest_password = ingest.password.get_secret_value()
    connect = connect_packet(
        client_id(simulator.username, PUBLISHER_CLIENT_NAME),
        username=simulator.username,
        password=simulator.password.get_secret_value(),
        keep_alive_s=120,
    )
    config = route_config(
        mqtt_url=f"tcp://{stack.mqtt.host}:{stack.mqtt.port}",
        topic="parksense/v1/+/+/+/telemetry",
        username=_ingest_user(),
        password=ingest_password,
        client_id=client_id(_ingest_user(), PEER_CLIENT_NAME),
        db_url=_database_url(stack.db),
    )
    argv = write_runner(state_dir / "peer", config)
    two = Stack(
        StackSettings(
            state_dir=state_dir, ingest_workers=2, ingest_metrics_base_port=args.metrics_port
        ),
        DatabaseSettings(port=args.db_port),
        MqttSettings(port=args.mqtt_port),
        ApiSettings(port=args.api_port),
        postgres_settings=BENCH_POSTGRES_SETTINGS,
    )
    return Bench(
        args=args,
        stack=stack,
        stacks={1: stack, 2: two},
        conninfo=conninfo,
        topics=device_topics(fleet),
        publisher_connect=connect,
        ingest_password=ingest_password,
        peer_argv=argv,
    )


def _stop_started(bench: Bench, started: list[str]) -> None:
    """Stop the peer and whatever of the stack this invocation started, by pid."""
    with contextlib.suppress(Exception):
        bench.stop_peer()
    _stop_stack(bench.stack, started)


def _stop_stack(stack: Stack, started: list[str]) -> None:
    """Stop whatever of the stack this invocation started (``stack.up()``'s list), by pid."""
    if "postgres" in started and "mosquitto" in started:
        stack.down()
        return
    for process in (stack.api_process(), stack.ingest_worker(1)):
        if process.name in started:
            process.stop()
    stack.ingest_worker(2).stop()  # only the bench starts a second worker here


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``parksense bench-peers``."""
    parser = argparse.ArgumentParser(
        prog="parksense bench-peers",
        description="Issue 10's load against parksense and a tuned mq-bridge, in one run.",
    )
    parser.add_argument("--messages", type=int, default=MESSAGES, help=f"per run ({MESSAGES:,})")
    parser.add_argument("--runs", type=int, default=3, help="runs of each design (3)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_MESSAGES:,} messages, 1 run each"
    )
    parser.add_argument("--max-unacked", type=int, default=MAX_UNACKED)
    parser.add_argument("--run-timeout-s", type=float, default=RUN_TIMEOUT_S)
    parser.add_argument("--state-dir", type=Path, default=Path(".state/bench-peers"))
    parser.add_argument("--peer-venv", type=Path, default=None, help="default: STATE/peer-venv")
    parser.add_argument("--mqtt-port", type=int, default=18883)
    parser.add_argument("--db-port", type=int, default=15443)
    parser.add_argument("--api-port", type=int, default=18088)
    parser.add_argument("--metrics-port", type=int, default=19118)
    parser.add_argument(
        "--statements",
        type=StatementsMode,
        choices=list(StatementsMode),
        default=StatementsMode.MEDIAN,
        help="pg_stat_statements tables: each design's median run (default), all runs, or off",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack up")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.quick:
        args.messages, args.runs = QUICK_MESSAGES, 1
    if not 1 <= args.messages <= MAX_MESSAGES:
        raise BenchPeersError(f"--messages must be within [1, {MAX_MESSAGES:,}]")
    if not 1 <= args.runs <= MAX_RUNS:
        raise BenchPeersError(f"--runs must be within [1, {MAX_RUNS}]")
    if not 1 <= args.max_unacked <= 60_000:  # noqa: PLR2004 - below the 65,535 packet ids
        raise BenchPeersError("--max-unacked must be within [1, 60000]")
    if args.peer_venv is None:
        args.peer_venv = args.state_dir.absolute() / "peer-venv"


def run(args: argparse.Namespace) -> str:
    """Run the comparison; return the report (markdown)."""
    _check(args)
    peer_version = ensure_installed(args.peer_venv)
    bench, started = _prepare(args)
    results: list[RunResult] = []
    loads = [load_average()]
    try:
        # Workers left running by an earlier `--keep-stack` invocation may have been started
        # for another design (a shared subscription): start every design from none.
        bench.stop_ingest()
        span_ms = LoadWindow(0, args.messages, DEVICES).end_ms
        windows = args.runs * len(DESIGNS)
        base_ms = (time.time_ns() // 1_000_000 // 1000) * 1000 - PAST_MARGIN_MS - windows * span_ms
        for number in range(1, args.runs + 1):
            for d, design in enumerate(DESIGNS):
                w = (number - 1) * len(DESIGNS) + d
                window = LoadWindow(base_ms + w * span_ms, args.messages, DEVICES)
                results.append(run_once(bench, design, number, window, base_ms))
                loads.append(load_average())
        paced = []
        for design in DESIGNS:
            rate = summarise(results, design).landed_msg_s
            if design != PEER and rate:
                paced.append(paced_run(bench, design, rate * PACED_FRACTION, base_ms))
                loads.append(load_average())
        with psycopg.connect(bench.conninfo) as conn:
            facts = machine_facts(conn)
    finally:
        if not args.keep_stack:
            _stop_started(bench, started)
    facts["mq-bridge"] = peer_version
    facts["load average during the runs"] = ", ".join(loads)
    return _report(args, results, paced, facts)


def _report(
    args: argparse.Namespace,
    results: list[RunResult],
    paced: list[LatencyResult],
    facts: dict[str, str],
) -> str:
    lines = [
        (
            f"# bench-peers: {args.messages:,} messages x {args.runs} runs each, "
            f"{DEVICES} devices, 5 readings a message, <= {args.max_unacked:,} unacknowledged"
        ),
        "",
        render_summary([summarise(results, d) for d in DESIGNS]),
        render_runs(results),
        (
            f"Publish → commit at {PACED_FRACTION:.0%} of each design's median landed rate,"
            f" {PACED_S:g} s of messages measured when published (ingest's commit-lag"
            " histogram; quantiles are its bucket bounds):"
        ),
        "",
        render_latency(paced),
        *_statement_tables(args.statements, results),
        (
            "CPU: broker + consumer (ingest or mq-bridge) + PostgreSQL, from /proc, during the"
            " run (the bench's own sessions left out). The machine's cores are shared with"
            " whatever else runs (see the load average)."
        ),
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
    ]
    notes = [f"run {r.run} {r.design}: {n}" for r in results for n in r.notes]
    lines += ["", *(f"- {n}" for n in notes)] if notes else []
    return "\n".join(lines) + "\n"


def _statement_tables(mode: StatementsMode, results: list[RunResult]) -> list[str]:
    """Return the pg_stat_statements tables the mode asks for, with what they leave out."""
    if mode is StatementsMode.OFF:
        return []
    if mode is StatementsMode.ALL:
        runs = results
    else:
        runs = [r for d in DESIGNS if (r := median_run(results, d)) is not None]
    note = (
        "Statements: pg_stat_statements, reset before each run and read when it has landed"
        " (every session of the database: ingest, maintenance, API, the peer; the bench's own"
        " under each table). Execution time only. COPY into a hypertable never appears"
        " (ingest's `COPY readings`): TimescaleDB runs it in its own utility hook, which does"
        " not pass it on; its time is in the CPU figure, not here."
    )
    return [note, "", *(render_statements(r, TOP_STATEMENTS) for r in runs)]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(args)
    except (BenchPeersError, OSError, psycopg.Error) as exc:
        print(f"bench-peers: {exc}", file=sys.stderr)  # noqa: T201 - command line output
        return 1
    sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
