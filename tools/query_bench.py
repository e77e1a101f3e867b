"""The query benchmark: a 1,000-device park with 30 days of per-minute data, queried over HTTP.

```
generate (SQL generate_series, straight into a database of its own, not through MQTT)
  readings ─▶ roll-ups rebuilt by the production code ─▶ device_latest / device_status
measure (the real FastAPI app in-process, over its own connection pool)
  GET signals · signals/history 30 d at 1 h · a device's readings 30 d at 15 min · ...
```
The data is kept, so a second run with ``--reuse`` only measures. Prints a Markdown table
of p50/p95/max per query; exits 1 with ``--check`` when a p95 misses the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx2
import psycopg
from psycopg import sql

from schemas.fleet import Fleet
from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings, StackSettings
from services.core.aggregates import Agg
from services.stack.state_secrets import local_database
from services.storage import device_readings, rollups
from services.storage.fleet_store import load_fleet
from services.storage.migrate import apply_migrations
from simulators.fleet import generate_demo_fleet

logger = logging.getLogger(__name__)

GOAL_P95_MS = 100.0
DEFAULT_DATABASE = "parksense_querybench"
# An epoch for the counters, so that they grow steadily across generated days.
COUNTER_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# One reading per device, metric and minute. Values are deterministic functions of the
# device (a hash) and the minute: daily waves, idle hours, rare faults and alarm spikes.
_GENERATE_SQL = """
INSERT INTO readings (device_id, metric, ts, value, value_text, received_at)
SELECT d.device_id, m.metric, g.ts,
    CASE m.metric
        WHEN 'power_kw' THEN 200 + 150 * sin(2 * pi() * g.i / 1440.0 + d.h)
        WHEN 'energy_kwh' THEN (g.i - %(epoch_minute)s) * 3.0
        WHEN 'output_units' THEN
            floor((g.i - %(epoch_minute)s) * coalesce(d.capacity_units_per_hour, 0) / 80.0)
        WHEN 'speed_upm' THEN 10 + d.h %% 5
        WHEN 'temp_c' THEN
            CASE d.type_id WHEN 'machine' THEN 60 ELSE 22 END
            + 6 * sin(2 * pi() * g.i / 1440.0 + d.h)
        WHEN 'humidity_pct' THEN 50 + 10 * sin(2 * pi() * g.i / 1440.0 + d.h)
        WHEN 'pm25_ugm3' THEN
            30 + 20 * sin(2 * pi() * g.i / 720.0 + d.h)
            + CASE WHEN (g.i + d.h) %% 500 = 0 THEN 60 ELSE 0 END
        WHEN 'vibration_mm_s' THEN
            3 + 2 * sin(2 * pi() * g.i / 90.0 + d.h)
            + CASE WHEN (g.i + d.h) %% 400 = 0 THEN 5 ELSE 0 END
    END,
    CASE WHEN m.kind = 'state' THEN
        CASE WHEN (g.i + d.h) %% 997 < 3 THEN 'fault'
             WHEN (g.i / 60 + d.h) %% 24 < 4 THEN 'idle'
             ELSE 'running' END
    END,
    g.ts
FROM (
    SELECT device_id, type_id, capacity_units_per_hour, abs(hashtext(device_id)) %% 1000 AS h
    FROM devices WHERE park_id = %(park)s
) d
JOIN device_type_metrics m ON m.type_id = d.type_id
CROSS JOIN (
    SELECT ts, (extract(epoch FROM ts) / 60)::bigint AS i
    FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                         interval '1 minute') AS ts
) g
"""

_LATEST_SQL = """
INSERT INTO device_latest (device_id, metric, ts, value, value_text, received_at)
SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value, value_text, received_at
FROM readings
WHERE ts >= %(last)s AND ts < %(end)s
ORDER BY device_id, metric, ts DESC
ON CONFLICT (device_id, metric) DO UPDATE
SET ts = excluded.ts, value = excluded.value, value_text = excluded.value_text,
    received_at = excluded.received_at
"""

_STATUS_SQL = """
INSERT INTO device_status (device_id, online, status_ts, last_seen_ts)
SELECT device_id, true, %(start)s, %(last)s FROM devices WHERE park_id = %(park)s
ON CONFLICT (device_id) DO UPDATE
SET online = excluded.online, status_ts = excluded.status_ts,
    last_seen_ts = excluded.last_seen_ts
"""


@dataclass(frozen=True, slots=True)
class Timing:
    """Latencies of one query, in milliseconds."""

    name: str
    path: str
    samples_ms: list[float]

    def quantile(self, q: float) -> float:
        """The q-quantile (nearest rank)."""
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.query_bench", description=__doc__)
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="created if missing")
    parser.add_argument("--devices", type=int, default=1000, help="devices in the park")
    parser.add_argument("--days", type=int, default=30, help="days of per-minute data")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per query")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per query")
    parser.add_argument("--reuse", action="store_true", help="measure the data already there")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish a generation that was interrupted (from its first day without roll-ups)",
    )
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a p95 >= {GOAL_P95_MS} ms")
    return parser.parse_args(argv)


def _bench_fleet(devices: int) -> Fleet:
    factories = max(1, devices // 25)
    return generate_demo_fleet(parks=1, factories_per_park=factories, devices_per_factory=25)


def _ensure_database(settings: DatabaseSettings) -> None:
    admin = settings.model_copy(update={"name": "postgres"})
    with psycopg.connect(admin.conninfo(application_name="query-bench"), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.name,))
        if found.fetchone() is None:
            logger.info("Creating database %s", settings.name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.name)))


def _data_end(conninfo: str) -> datetime | None:
    """The end of the data already generated (after its newest minute), if any."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT max(ts) FROM device_latest").fetchone()
    if row is None or row[0] is None:
        return None
    newest: datetime = row[0]
    return newest + timedelta(minutes=1)


def _resume_point(conninfo: str, days: int) -> tuple[datetime, datetime, datetime] | None:
    """Where an interrupted generation stands: (its start, its end, the first day to make).

    Each day's roll-ups commit after its readings, so the first day without park minutes
    is the first one not finished (its readings, if any, are made again).
    """
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT (SELECT min(ts) FROM readings), (SELECT max(minute) FROM park_1m)"
        ).fetchone()
    if row is None or row[0] is None:
        return None
    start: datetime = row[0]
    done_to: datetime | None = row[1]
    day = (
        start
        if done_to is None
        else start + (done_to - start) // timedelta(days=1) * timedelta(days=1) + timedelta(days=1)
    )
    return start, start + timedelta(days=days), day


async def _generate(
    conninfo: str, fleet: Fleet, days: int, *, resume: bool = False
) -> tuple[datetime, datetime]:
    park_id = fleet.parks[0].id
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    found = _resume_point(conninfo, days) if resume else None
    if found is None:
        load_fleet(conninfo, fleet)
    epoch_minute = int(COUNTER_EPOCH.timestamp() // 60)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        if found is None:
            await conn.execute(
                "TRUNCATE readings, readings_1m, park_1m, park_metric_1m, device_latest,"
                " device_status, device_status_events, device_availability, availability_dirty"
            )
            day = start
        else:
            start, end, day = found
            logger.info("Resuming at %s (data from %s)", day.isoformat(), start.isoformat())
            await conn.execute("DELETE FROM readings WHERE ts >= %s", (day,))
        while day < end:
            upto = min(day + timedelta(days=1), end)
            began = time.perf_counter()
            await conn.execute(
                _GENERATE_SQL,
                {"park": park_id, "start": day, "end": upto, "epoch_minute": epoch_minute},
            )
            await rollups.rebuild(conn, day, upto)
            logger.info(
                "Generated %s in %.0f s", day.date().isoformat(), time.perf_counter() - began
            )
            day = upto
        params = {"park": park_id, "start": start, "end": end, "last": end - timedelta(minutes=1)}
        await conn.execute(_LATEST_SQL, params)
        await conn.execute(_STATUS_SQL, params)
        for table in (
            "readings",
            "readings_1m",
            "park_1m",
            "park_metric_1m",
            "device_latest",
            "devices",
        ):
            await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return start, end


async def _measure(
    database: DatabaseSettings,
    queries: list[tuple[str, str]],
    *,
    requests: int,
    warmup: int,
) -> list[Timing]:
    app = create_app(ApiSettings(pool_min_size=2, pool_max_size=4, trusted_hosts="bench"), database)
    timings = []
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://bench", timeout=60
        ) as client,
    ):
        await app.state.pool.wait()
        for name, path in queries:
            samples = []
            for i in range(warmup + requests):
                began = time.perf_counter()
                response = await client.get(path)
                elapsed_ms = (time.perf_counter() - began) * 1000
                if response.status_code != 200:  # noqa: PLR2004 - HTTP OK
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
                if i >= warmup:
                    samples.append(elapsed_ms)
            timings.append(Timing(name, path, samples))
            logger.info("%s: p95 %.1f ms", name, timings[-1].quantile(0.95))
    return timings


async def _measure_device_query_without_http(
    conninfo: str,
    device_id: str,
    start: datetime,
    end: datetime,
    *,
    requests: int,
    warmup: int,
) -> Timing:
    """The device readings query without HTTP: the storage function the endpoint calls."""
    samples = []
    # What GET /v1/devices/{id}/readings?metric=power_kw&bucket=15m asks of storage.
    ask = device_readings.BucketRequest(
        device_id, "power_kw", start, end, timedelta(minutes=15), Agg.AVG, state_metric=False
    )
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for i in range(warmup + requests):
            began = time.perf_counter()
            await device_readings.bucketed_readings(conn, ask)
            if i >= warmup:
                samples.append((time.perf_counter() - began) * 1000)
    return Timing("device readings 30 d, 15 min (storage function, no HTTP)", "", samples)


def _queries(
    park_id: str, city: str, device_id: str, start: datetime, end: datetime
) -> list[tuple[str, str]]:
    last = end - timedelta(minutes=1)
    as_of = last.isoformat().replace("+00:00", "Z")
    month = f"start={start.isoformat().replace('+00:00', 'Z')}&end={as_of}"
    return [
        ("signals (live, W = 5 min)", f"/v1/parks/{park_id}/signals?as_of={as_of}"),
        ("signals/history 30 d, 1 h", f"/v1/parks/{park_id}/signals/history?{month}&bucket=1h"),
        (
            "device readings 30 d, 15 min",
            f"/v1/devices/{device_id}/readings?metric=power_kw&{month}&bucket=15m",
        ),
        ("signals/history 30 d, 1 d", f"/v1/parks/{park_id}/signals/history?{month}&bucket=1d"),
        (
            "park metric power_kw 30 d, 1 h",
            f"/v1/parks/{park_id}/metrics/power_kw?{month}&bucket=1h",
        ),
        ("city signals", f"/v1/cities/{city}/signals?as_of={as_of}"),
    ]


def _render(timings: list[Timing], devices: int, days: int, rows: int) -> str:
    lines = [
        (
            f"{devices} devices, {days} days of per-minute data ({rows:,} raw readings);"
            f" {len(timings[0].samples_ms)} timed requests per query, in-process over HTTP."
        ),
        f"Machine: {platform.machine()}, Python {platform.python_version()}.",
        "",
        "| query | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {t.name} | {t.quantile(0.5):.1f} | {t.quantile(0.95):.1f} | {max(t.samples_ms):.1f} |"
        for t in timings
    ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    # Without PARKSENSE_DB_PASSWORD, the local stack's password (PARKSENSE_STATE_DIR).
    local = local_database(StackSettings().state_dir, DatabaseSettings())
    database = local.model_copy(update={"name": args.database})
    _ensure_database(database)
    conninfo = database.conninfo(application_name="query-bench")
    apply_migrations(conninfo)
    fleet = _bench_fleet(args.devices)
    found = _data_end(conninfo) if args.reuse else None
    if found is None:
        start, end = await _generate(conninfo, fleet, args.days, resume=args.resume)
    else:
        start, end = found - timedelta(days=args.days), found
    park = fleet.parks[0]
    meter = next(d.id for f in park.factories for d in f.devices if d.type == "power_meter")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM readings_1m WHERE minute >= %s", (start,)
        ).fetchone()
    rows = int(row[0]) if row else 0
    timings = await _measure(
        database,
        _queries(park.id, park.city, meter, start, end),
        requests=args.requests,
        warmup=args.warmup,
    )
    timings.append(
        await _measure_device_query_without_http(
            conninfo, meter, start, end, requests=args.requests, warmup=args.warmup
        )
    )
    print(_render(timings, args.devices, args.days, rows))  # noqa: T201 - the report
    missed = [t.name for t in timings[:3] if t.quantile(0.95) >= GOAL_P95_MS]
    if args.check and missed:
        print(f"p95 goal of {GOAL_P95_MS} ms missed by: {', '.join(missed)}")  # noqa: T201
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the query benchmark; see ``--help``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    args = _parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
