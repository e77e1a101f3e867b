"""The load benchmark behind ``make bench``: publish at QoS 1, measure what lands in the database.

Against the running local stack (``make up``): the benchmark adds a park ``bench-park`` to the
registry, publishes batches of env-sensor samples from several MQTT connections for a fixed
time, waits until the database stops growing, and reports throughput landed, latency from
publish to commit (the ingest workers' ``parksense_ingest_commit_lag_seconds`` histogram),
published against stored counts, the ingest workers' peak memory and the machine. Every loop
is bounded in time; afterwards the registry is put back as it was (readings stay).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from schemas.fleet import Park
from schemas.telemetry import MAX_SAMPLES_PER_MESSAGE, telemetry_topic
from services.config import DatabaseSettings, MqttSettings, StackSettings
from services.core.access import PlatformRole
from services.stack.stack import platform_mqtt_settings
from services.stack.state_secrets import local_database
from services.storage.fleet_store import read_fleet
from tools.bench_load import (
    ACK_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    METRICS_PER_SAMPLE,
    BenchError,
    LoadPlan,
    Publisher,
)
from tools.bench_registry import (
    DEVICE_PREFIX,
    bench_park,
    without_bench_park,
)
from tools.bench_stats import (
    BenchReport,
    Buckets,
    parse_histogram,
    quantiles_from_scrapes,
    render_markdown,
)

logger = logging.getLogger(__name__)

COMMIT_LAG_HISTOGRAM = "parksense_ingest_commit_lag_seconds"
# The database has settled when its row count has not moved for this many polls.
SETTLE_POLL_S = 0.5
SETTLE_STABLE_POLLS = 4
# Bounds of a run: it must end, and stay within what a laptop's stack can hold.
MAX_DEVICES = 1_000_000
MAX_DURATION_S = 3600.0
MAX_CONNECTIONS = 64
# Heartbeats older than this belong to workers that are gone.
HEARTBEAT_MAX_AGE_S = 30


def _ingest_workers(state_dir: Path, base_port: int) -> dict[str, tuple[int | None, int]]:
    """Return each ingest worker's pid (when its pid file names a live process) and port."""
    workers: dict[str, tuple[int | None, int]] = {}
    for path in sorted((state_dir / "run").glob("ingest-*.pid")):
        number = path.stem.removeprefix("ingest-")
        if not number.isdigit():
            continue
        pid: int | None = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text(encoding="utf-8").split()[0])
        if pid is not None and not Path(f"/proc/{pid}").exists():
            pid = None
        workers[path.stem] = (pid, base_port + int(number) - 1)
    return workers


def _scrape(port: int) -> str | None:
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read()).decode("utf-8")
    except (urllib.error.URLError, OSError):
        return None


def _scrape_histograms(ports: dict[str, int]) -> dict[str, Buckets]:
    result = {}
    for name, port in ports.items():
        text = _scrape(port)
        if text is not None:
            buckets = parse_histogram(text, COMMIT_LAG_HISTOGRAM)
            if buckets:
                result[name] = buckets
    return result


def _peak_rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    return None


def _command_version(argv: list[str], pattern: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "n/a"


def machine_facts(conn: psycopg.Connection | None) -> dict[str, str]:
    """Return the facts a benchmark figure needs: CPU, memory, OS and component versions."""
    cpu = "n/a"
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        if match := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            cpu = match.group(1).strip()
    memory = "n/a"
    with contextlib.suppress(OSError):
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
        if match := re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE):
            memory = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    facts = {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "paho-mqtt": importlib.metadata.version("paho-mqtt"),
        "Mosquitto": _command_version(["mosquitto", "-h"], r"mosquitto version (\S+)"),
        "PostgreSQL": "n/a",
        "TimescaleDB": "n/a",
    }
    if conn is not None:
        row = conn.execute("SHOW server_version").fetchone()
        facts["PostgreSQL"] = str(row[0]) if row else "n/a"
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if row:
            license_row = conn.execute("SELECT current_setting('timescaledb.license', true)")
            edition = license_row.fetchone()
            facts["TimescaleDB"] = f"{row[0]} ({edition[0] if edition else 'unknown'} edition)"
    return facts


def _wait_for_registry(conn: psycopg.Connection, version: int, timeout_s: float) -> int:
    """Wait until every live ingest worker uses fleet ``version``; return how many there are.

    Raises:
        BenchError: no worker is alive, or they did not load the fleet in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE registry_version >= %s) FROM ingest_workers"
            " WHERE heartbeat_at > now() - make_interval(secs => %s)",
            (version, HEARTBEAT_MAX_AGE_S),
        ).fetchone()
        alive, ready = (int(row[0]), int(row[1])) if row else (0, 0)
        if alive and ready == alive:
            return alive
        if time.monotonic() >= deadline:
            if not alive:
                raise BenchError("no ingest worker is running: start the stack with `make up`")
            raise BenchError(f"{alive - ready} ingest workers did not load fleet v{version}")
        time.sleep(0.2)


def _stored(
    conn: psycopg.Connection, since: datetime
) -> tuple[int, datetime | None, datetime | None]:
    row = conn.execute(
        "SELECT count(*), min(received_at), max(received_at) FROM readings"
        " WHERE ts >= %s AND device_id LIKE %s",
        (since, f"{DEVICE_PREFIX}%"),
    ).fetchone()
    if row is None:
        return 0, None, None
    return int(row[0]), row[1], row[2]


def _wait_until_settled(
    conn: psycopg.Connection, since: datetime, expected: int, timeout_s: float
) -> tuple[int, bool, float]:
    """Poll the stored row count until it reaches ``expected`` or stops growing (bounded).

    Returns:
        The count, whether it settled before ``timeout_s``, and the monotonic time of the
        poll that first saw the final count.
    """
    deadline = time.monotonic() + timeout_s
    last, stable, grew_at = -1, 0, time.monotonic()
    while True:
        count, _, _ = _stored(conn, since)
        if count == last:
            stable += 1
        else:
            last, stable, grew_at = count, 0, time.monotonic()
        if count >= expected or stable >= SETTLE_STABLE_POLLS:
            return count, True, grew_at
        if time.monotonic() >= deadline:
            return count, False, grew_at
        time.sleep(SETTLE_POLL_S)


def _latency_from_database(conn: psycopg.Connection, since: datetime) -> tuple[float, float, int]:
    row = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)),"
        " count(*) FROM readings WHERE ts >= %s AND device_id LIKE %s",
        (since, f"{DEVICE_PREFIX}%"),
    ).fetchone()
    if row is None or row[0] is None:
        return 0.0, 0.0, 0
    return float(row[0]), float(row[1]), int(row[2])


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``parksense bench``."""
    mqtt_settings = MqttSettings()
    parser = argparse.ArgumentParser(
        prog="parksense bench", description="Load benchmark against the running local stack."
    )
    parser.add_argument("--devices", type=int, default=1000, help="bench devices (default 1000)")
    parser.add_argument("--duration-s", type=float, default=30.0, help="publish time (30)")
    parser.add_argument("--rate", type=float, default=None, help="messages/s (default: max)")
    parser.add_argument("--connections", type=int, default=4, help="publisher connections (4)")
    parser.add_argument("--batch", type=int, default=10, help="samples per message (10)")
    parser.add_argument("--host", default=mqtt_settings.host)
    parser.add_argument("--port", type=int, default=mqtt_settings.port)
    stack = StackSettings()
    parser.add_argument("--state-dir", type=Path, default=stack.state_dir)
    parser.add_argument(
        "--metrics-base-port",
        type=int,
        default=stack.ingest_metrics_base_port,
        help=f"ingest worker i serves /metrics on this port + i - 1 "
        f"({stack.ingest_metrics_base_port})",
    )
    parser.add_argument("--registry-timeout-s", type=float, default=30.0)
    parser.add_argument("--settle-timeout-s", type=float, default=120.0)
    parser.add_argument("--keep-fleet", action="store_true", help="leave bench-park registered")
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="only publish and report the publish rate (no database, no fleet change)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.devices <= MAX_DEVICES:
        raise BenchError(f"--devices must be within [1, {MAX_DEVICES}]")
    if not 0 < args.duration_s <= MAX_DURATION_S:
        raise BenchError(f"--duration-s must be within (0, {MAX_DURATION_S}]")
    if not 1 <= args.connections <= min(MAX_CONNECTIONS, args.devices):
        raise BenchError(f"--connections must be within [1, min({MAX_CONNECTIONS}, devices)]")
    if not 1 <= args.batch <= MAX_SAMPLES_PER_MESSAGE:
        raise BenchError(f"--batch must be within [1, {MAX_SAMPLES_PER_MESSAGE}]")
    if args.rate is not None and args.rate <= 0:
        raise BenchError("--rate must be positive")


def _publish(args: argparse.Namespace, park: Park, since: datetime) -> list[Publisher]:
    # Without a credential in the environment, the local stack's simulator credential.
    mqtt_settings = platform_mqtt_settings(args.state_dir, PlatformRole.SIMULATOR, MqttSettings())
    password = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
    topics = [telemetry_topic(park.id, f.id, d.id) for f in park.factories for d in f.devices]
    deadline = time.monotonic() + args.duration_s
    rate = None if args.rate is None else args.rate / args.connections
    publishers = [
        Publisher(
            LoadPlan(
                index=i,
                host=args.host,
                port=args.port,
                username=mqtt_settings.username,
                password=password,
                topics=topics[i :: args.connections],
                batch=args.batch,
                rate_msg_s=rate,
                deadline=deadline,
                since_ms=math.ceil(since.timestamp() * 1000),
            )
        )
        for i in range(args.connections)
    ]
    for publisher in publishers:
        publisher.start()
    for publisher in publishers:
        publisher.join(args.duration_s + CONNECT_TIMEOUT_S + ACK_TIMEOUT_S + 5)
    return publishers


def run(args: argparse.Namespace) -> BenchReport:
    """Run the benchmark described by ``args``.

    Raises:
        BenchError: the stack is not running, or a publisher failed.
    """
    _check_args(args)
    park = bench_park(args.devices)
    if args.publish_only:
        return _report_publish(args, _publish(args, park, datetime.now(UTC)), args.duration_s)
    database = local_database(args.state_dir, DatabaseSettings())
    conninfo = database.conninfo(application_name="parksense-bench")
    from services.storage.fleet_store import load_fleet  # noqa: PLC0415 - needs the stack

    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"cannot reach the database (start the stack with `make up`): {exc}"
        ) from exc
    with conn:
        previous = without_bench_park(read_fleet(conn))
        merged = previous.model_copy(update={"parks": [*previous.parks, park]})
        counts = load_fleet(conninfo, merged)
        try:
            workers_alive = _wait_for_registry(conn, counts.version, args.registry_timeout_s)
            workers = _ingest_workers(args.state_dir, args.metrics_base_port)
            ports = {name: port for name, (_, port) in workers.items()}
            before = _scrape_histograms(ports)
            since = datetime.now(UTC)
            print(  # noqa: T201 - progress for the user
                f"Publishing for {args.duration_s:g} s from {args.connections} connections to "
                f"{args.devices} devices ({workers_alive} ingest workers) ...",
                file=sys.stderr,
                flush=True,
            )
            started = time.monotonic()
            publishers = _publish(args, park, since)
            report = _report_publish(args, publishers, args.duration_s)
            expected = report.readings_published
            print(  # noqa: T201 - progress for the user
                f"Published {report.messages_acked:,} messages; waiting for the database ...",
                file=sys.stderr,
                flush=True,
            )
            stored, settled, grew_at = _wait_until_settled(
                conn, since, expected, args.settle_timeout_s
            )
            report.drain_s = grew_at - started
            after = _scrape_histograms(ports)
            _fill_database_figures(conn, report, since, stored, settled)
            _fill_latency(conn, report, since, before, after)
            report.ingest_workers = workers_alive
            for name, (pid, _) in workers.items():
                rss = _peak_rss_mib(pid) if pid is not None else None
                if rss is not None:
                    report.ingest_peak_rss_mib[name] = rss
            if not report.ingest_peak_rss_mib:
                report.notes.append(f"no live ingest pid file under {args.state_dir}/run")
            report.machine = machine_facts(conn)
        finally:
            if not args.keep_fleet:
                load_fleet(conninfo, previous)
    return report


def _report_publish(
    args: argparse.Namespace, publishers: list[Publisher], duration_s: float
) -> BenchReport:
    errors = [p.error for p in publishers if p.error]
    if errors:
        raise BenchError("; ".join(errors))
    sent = sum(p.sent for p in publishers)
    acked = sum(p.acked for p in publishers)
    report = BenchReport(
        devices=args.devices,
        connections=args.connections,
        samples_per_message=args.batch,
        metrics_per_sample=METRICS_PER_SAMPLE,
        duration_s=duration_s,
        target_rate_msg_s=args.rate,
        messages_published=sent,
        messages_acked=acked,
        readings_published=acked * args.batch * METRICS_PER_SAMPLE,
        publish_rate_msg_s=acked / duration_s,
    )
    if acked < sent:
        report.notes.append(f"{sent - acked} messages were not acknowledged by the broker")
    refused = sum(p.refused for p in publishers)
    if refused:
        report.notes.append(f"the broker refused {refused} messages (PUBACK reason >= 0x80)")
    if args.publish_only:
        report.publish_only = True
        report.machine = machine_facts(None)
    return report


def _fill_database_figures(
    conn: psycopg.Connection, report: BenchReport, since: datetime, stored: int, settled: bool
) -> None:
    report.readings_stored = stored
    report.settled = settled
    _, first, last = _stored(conn, since)
    if first is not None and last is not None and last > first:
        span = (last - first).total_seconds()
        report.landed_span_s = span
        report.landed_readings_s = stored / span
        report.landed_messages_s = stored / (report.samples_per_message * METRICS_PER_SAMPLE) / span
    refused = conn.execute(
        "SELECT reason, sum(refused) FROM dead_letters"
        " WHERE received_at >= %s AND device_id LIKE %s"
        " GROUP BY reason ORDER BY reason",
        (since, f"{DEVICE_PREFIX}%"),
    ).fetchall()
    report.refused_by_reason = {str(reason): int(n) for reason, n in refused}
    report.readings_refused = sum(report.refused_by_reason.values())
    if report.drain_s:
        report.stored_readings_s = stored / report.drain_s
        if report.stored_readings_s < 0.95 * report.readings_published / report.duration_s:
            report.notes.append(
                "ingest was the bottleneck: the database fell behind the publishers, so the "
                "latency includes queueing; use --rate below the stored rate for the latency "
                "of a sustainable load"
            )
    missing = report.readings_published - report.readings_stored - report.readings_refused
    if missing:
        report.notes.append(f"published - stored - refused = {missing:,} readings")


def _fill_latency(
    conn: psycopg.Connection,
    report: BenchReport,
    since: datetime,
    before: dict[str, Buckets],
    after: dict[str, Buckets],
) -> None:
    if after:
        p50, p99, count = quantiles_from_scrapes(before, after)
        report.latency_p50_s, report.latency_p99_s = p50, p99
        report.latency_observations = count
        report.latency_source = (
            f"ingest histogram {COMMIT_LAG_HISTOGRAM}, {count:,} sampled readings, "
            "interpolated within buckets; includes any other traffic during the run"
        )
        return
    p50, p99, count = _latency_from_database(conn, since)
    report.latency_p50_s, report.latency_p99_s = p50, p99
    report.latency_observations = count
    report.latency_source = "received_at - ts from the database (no ingest /metrics endpoint)"
    report.notes.append(
        "latency is publish → receipt by ingest, not → commit: the ingest workers' "
        f"{COMMIT_LAG_HISTOGRAM} histogram could not be scraped"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark command line; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)  # noqa: T201 - command line output
        return 1
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
