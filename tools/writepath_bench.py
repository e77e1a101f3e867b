"""Write-path benchmark: N writer processes, one throwaway PostgreSQL, CPU from /proc.

Measures the storage half of ingest on issue 10's load (200 devices in 4 parks of 5
factories, one message of five readings per device per simulated second, messages dealt
round-robin to the workers as a shared subscription does, 5,000-row batches): landed
messages/s, CPU seconds per stored reading of the writers, PostgreSQL and (when the tree
has one) the maintenance process, ``pg_stat_activity`` wait events of the writers, and
the roll-up lag (commit → folded). Run it with the virtualenv of the tree to measure::

    /path/to/tree/.venv/bin/python tools/writepath_bench.py --workers 1 --messages 60000

It imports ``services`` from that venv's tree, so the same script measures before and
after. ``PYTHONPATH=/other/tree`` does not switch trees: the editable install's import
hook takes precedence over it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from schemas.fleet import parse_fleet
from services.core.batching import Batch
from services.core.readings import Reading
from services.stack.postgres import PostgresCluster
from services.stack.stack import settings_env
from services.storage.fleet_store import load_fleet
from services.storage.migrate import apply_migrations
from services.storage.writer import BatchWriter

DEVICES = 200
PARKS = 4
FACTORIES = 5
ROWS_PER_BATCH = 5000
READINGS_PER_MESSAGE = 5
T0 = datetime(2026, 11, 1, tzinfo=UTC)
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def fleet_yaml() -> str:
    """The bench fleet: one device type with the five metrics of issue 10."""
    lines = [
        "device_types:",
        "  - id: bench_device",
        "    metrics:",
        "      power_kw: {kind: gauge, unit: kW}",
        "      energy_kwh: {kind: counter, unit: kWh}",
        "      state: {kind: state, states: [running, idle, fault]}",
        "      temp_c: {kind: gauge, unit: C}",
        "      output_units: {kind: counter, unit: units}",
        "parks:",
    ]
    per_factory = DEVICES // (PARKS * FACTORIES)
    for p in range(PARKS):
        lines += [f"  - id: bp{p}", "    factories:"]
        for f in range(FACTORIES):
            lines += [f"      - id: bp{p}-f{f}", "        devices:"]
            lines += [
                f"          - {{id: bp{p}-f{f}-d{d}, type: bench_device}}"
                for d in range(per_factory)
            ]
    return "\n".join(lines) + "\n"


def device_ids() -> list[str]:
    """The bench devices, in publishing order."""
    per_factory = DEVICES // (PARKS * FACTORIES)
    return [
        f"bp{p}-f{f}-d{d}"
        for p in range(PARKS)
        for f in range(FACTORIES)
        for d in range(per_factory)
    ]


def message_readings(index: int, devices: list[str], received_at: datetime) -> list[Reading]:
    """The five readings of message ``index``: device round-robin, one simulated second each."""
    device = devices[index % len(devices)]
    second = index // len(devices)
    ts = T0 + timedelta(seconds=second)
    return [
        Reading(device, "power_kw", ts, float(second % 97), None, received_at),
        Reading(device, "energy_kwh", ts, float(second), None, received_at),
        Reading(device, "state", ts, None, "running" if second % 11 else "idle", received_at),
        Reading(device, "temp_c", ts, 20.0 + second % 5, None, received_at),
        Reading(device, "output_units", ts, float(second * 2), None, received_at),
    ]


def _writer(
    conninfo: str,
    worker: int,
    workers: int,
    messages: int,
    batch_rows: int,
    out: mp.Queue[tuple[float, float, int]],
) -> None:
    devices = device_ids()
    now = datetime.now(UTC)
    mine = [i for i in range(messages) if i % workers == worker]
    per_batch = batch_rows // READINGS_PER_MESSAGE
    batches = [
        Batch(
            readings=[r for i in mine[k : k + per_batch] for r in message_readings(i, devices, now)]
        )
        for k in range(0, len(mine), per_batch)
    ]

    async def run() -> tuple[float, float, int]:
        writer = BatchWriter(f"{conninfo} application_name=bench-writer-{worker}")
        await writer.connect()
        cpu0, started = time.process_time(), time.monotonic()
        inserted = 0
        try:
            for batch in batches:
                inserted += (await writer.write(batch)).inserted
        finally:
            await writer.close()
        return time.process_time() - cpu0, time.monotonic() - started, inserted

    out.put(asyncio.run(run()))


def _proc_cpu_s(pid: int, *, children: bool = False) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0  # exited meanwhile: its time is in the postmaster's cutime once reaped
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (exited children)
    return ticks / TICKS_PER_S


def postgres_cpu_s(postmaster: int) -> float:
    """CPU of the cluster: the postmaster, its exited children, and its live children."""
    total = _proc_cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
            total += _proc_cpu_s(int(entry.name))
    return total


class Sampler(threading.Thread):
    """Samples the writers' wait events and the roll-up lag every 50 ms."""

    def __init__(self, conninfo: str, has_dirty_log: bool) -> None:
        """Prepare; ``start`` begins sampling."""
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.has_dirty_log = has_dirty_log
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.lags: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                for app, kind, event in conn.execute(
                    "SELECT application_name, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE application_name LIKE 'bench-writer-%%' AND state = 'active'"
                ).fetchall():
                    self.waits[f"{kind or 'CPU'}:{event or '-'}"] += 1
                    del app
                self.samples += 1
                if self.has_dirty_log:
                    row = conn.execute(
                        "SELECT extract(epoch FROM now() - min(committed_at)) FROM rollup_dirty"
                    ).fetchone()
                    self.lags.append(float(row[0]) if row and row[0] is not None else 0.0)
                time.sleep(0.05)


# The statements of one run that took the most time, with their share of the run's
# stored readings (pg_stat_statements, preloaded with --statements).
_TOP_STATEMENTS_SQL = """
SELECT round(total_exec_time::numeric, 1), calls, rows,
       regexp_replace(left(query, 160), '\\s+', ' ', 'g')
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
LIMIT %s
"""


def top_statements(conninfo: str, limit: int, stored: int) -> list[dict[str, Any]]:
    """The run's ``limit`` costliest statements: ms in all, µs per stored reading, calls."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(_TOP_STATEMENTS_SQL, (limit,)).fetchall()
    return [
        {
            "total_ms": float(ms),
            "us_per_reading": round(float(ms) * 1000 / max(stored, 1), 2),
            "calls": calls,
            "rows": n,
            "query": query,
        }
        for ms, calls, n, query in rows
    ]


def _prepare_database(conninfo: str, *, statements: bool) -> bool:
    """Migrate, load the fleet; return whether the tree logs dirty keys (has a fold)."""
    apply_migrations(conninfo)
    load_fleet(conninfo, parse_fleet(fleet_yaml()))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if statements:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        row = conn.execute("SELECT to_regclass('rollup_dirty') IS NOT NULL").fetchone()
    return bool(row and row[0])


def bench(
    cluster: PostgresCluster,
    workers: int,
    messages: int,
    batch_rows: int = ROWS_PER_BATCH,
    statements: int = 0,
) -> dict[str, Any]:
    """One run on a fresh database: write, wait for the fold, report the figures."""
    name = f"bench_{workers}_{int(time.time())}"
    cluster.ensure_database(name)
    conninfo = cluster.conninfo(name)
    has_dirty_log = _prepare_database(conninfo, statements=bool(statements))
    maintenance = None
    if has_dirty_log:
        env = {
            **os.environ,
            **settings_env(cluster.database_settings(name)),
            # Availability and retention stay out of the figures (hourly and minutely).
            "PARKSENSE_RETENTION_AVAILABILITY_INTERVAL_S": "3600",
        }
        maintenance = subprocess.Popen(
            [sys.executable, "-m", "services.maintenance", "--log-level", "WARNING"], env=env
        )
    postmaster = cluster.pid
    if postmaster is None:
        raise RuntimeError("PostgreSQL is not running")
    sampler = Sampler(conninfo, bool(has_dirty_log))
    ctx = mp.get_context("spawn")
    out: mp.Queue[tuple[float, float, int]] = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(conninfo, w, workers, messages, batch_rows, out))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    # Building the batches takes the workers a moment; measure from the first write.
    time.sleep(0.5)
    pg0 = postgres_cpu_s(postmaster)
    m0 = _proc_cpu_s(maintenance.pid) if maintenance else 0.0
    sampler.start()
    try:
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
    except BaseException:
        if maintenance:  # never leave it behind, by its pid
            maintenance.terminate()
            maintenance.wait(timeout=30)
        raise
    wall = max(r[1] for r in results)
    folded_after = 0.0
    if maintenance:
        t_end = time.monotonic()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while (conn.execute("SELECT count(*) FROM rollup_dirty").fetchone() or (0,))[0]:
                time.sleep(0.05)
        folded_after = time.monotonic() - t_end
    sampler.stop.set()
    sampler.join()
    pg_cpu = postgres_cpu_s(postmaster) - pg0
    m_cpu = (_proc_cpu_s(maintenance.pid) - m0) if maintenance else 0.0
    if maintenance:
        maintenance.terminate()
        maintenance.wait(timeout=30)
    stored = sum(r[2] for r in results)
    writer_cpu = sum(r[0] for r in results)
    lags = sorted(sampler.lags)
    top = top_statements(conninfo, statements, stored) if statements else []
    return {
        "workers": workers,
        "messages": messages,
        "stored_readings": stored,
        "wall_s": round(wall, 2),
        "messages_per_s": round(messages / wall),
        "writer_cpu_us_per_reading": round(writer_cpu / stored * 1e6, 2),
        "postgres_cpu_us_per_reading": round(pg_cpu / stored * 1e6, 2),
        "maintenance_cpu_us_per_reading": round(m_cpu / stored * 1e6, 2),
        "wait_samples": sampler.samples,
        "waits": dict(sampler.waits.most_common()),
        "rollup_lag_p50_s": round(lags[len(lags) // 2], 2) if lags else None,
        "rollup_lag_max_s": round(lags[-1], 2) if lags else None,
        "folded_s_after_last_commit": round(folded_after, 2),
        **({"statements": top} if top else {}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with 1 and 2 workers (or as told) and print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[ROWS_PER_BATCH])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--statements", type=int, default=0, help="report the N costliest statements of each run"
    )
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="parksense-wpbench-"))
    state.chmod(0o755)  # PostgreSQL may run as another system user
    preload = {"shared_preload_libraries": "timescaledb,pg_stat_statements"}
    cluster = PostgresCluster(
        state / "pg",
        args.port,
        log_file=state / "postgres.log",
        settings=preload if args.statements else None,
    )
    cluster.init()
    cluster.start()
    try:
        for batch_rows in args.batch_rows:
            for workers in args.workers:
                figures = bench(cluster, workers, args.messages, batch_rows, args.statements)
                sys.stdout.write(json.dumps({"batch_rows": batch_rows, **figures}) + "\n")
                sys.stdout.flush()
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
