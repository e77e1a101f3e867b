"""The Grafana dashboard's SQL runs as its read-only role and returns rows; the role reads only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from services.storage import signal_log
from services.storage.registry import read_registry
from services.storage.signal_bodies import live_bodies
from tests.harness.storage import load, reading, write

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "parksense.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "parksense.yaml"
ROLE = "parksense_grafana"
INTERVAL = "1m"


def dashboard() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return body


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, SQL) of every panel target."""
    return [(p["title"], t["rawSql"]) for p in dashboard()["panels"] for t in p["targets"]]


def variable_queries() -> list[tuple[str, str]]:
    """(variable name, SQL) of every query variable."""
    return [(v["name"], v["query"]) for v in dashboard()["templating"]["list"]]


def _seconds(interval: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(interval[:-1]) * units[interval[-1]]


def expand(sql: str, start: datetime, end: datetime, parks: list[str]) -> str:
    """Expand Grafana's variables and PostgreSQL macros as Grafana does (TimescaleDB on)."""
    lo, hi = (f"'{t.isoformat().replace('+00:00', 'Z')}'" for t in (start, end))
    sql = sql.replace("$__interval_ms", str(_seconds(INTERVAL) * 1000))
    sql = sql.replace("$__interval", INTERVAL)
    # A multi-value variable becomes its values quoted and comma-separated.
    sql = re.sub(r"\$\{park\}|\$park\b", ",".join(f"'{p}'" for p in parks), sql)

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {lo} AND {hi}"
        if name == "timeFrom":
            return lo
        if name == "timeTo":
            return hi
        if name in {"timeGroup", "timeGroupAlias"}:
            group = f"time_bucket('{_seconds(args[1].strip(chr(39)))}.000s', {args[0]})"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        raise AssertionError(f"the test does not know Grafana macro $__{name}")

    sql = re.sub(r"\$__(\w+)\(([^)]*)\)", macro, sql)
    assert "$" not in sql, sql
    return sql


@pytest.fixture
def grafana(clean_db: str) -> Iterator[str]:
    """Data in every table the dashboard reads; the role's connection string (login on)."""
    load(clean_db)
    now = datetime.now(UTC).replace(microsecond=0)
    readings = []
    for k in range(10):
        ts = now - timedelta(minutes=10 - k)
        readings += [
            reading("m1", "power_kw", ts, 100 + k),
            reading("m1", "energy_kwh", ts, 1000 + 5 * k),
            reading("l1", "state", ts, "running" if k < 9 else "fault"),
            reading("l1", "output_units", ts, 10 * k),
            reading("e1", "temp_c", ts, 20 + 3 * k),  # above its 35 °C threshold at the end
        ]
    write(clean_db, readings)

    async def share() -> None:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            parks = list((await read_registry(conn)).parks.values())
            for back in (2, 1, 0):
                bodies = await live_bodies(
                    conn,
                    parks,
                    as_of=now - timedelta(minutes=back),
                    window_s=300,
                    online_timeout_s=90,
                )
                await signal_log.record(conn, bodies)

    asyncio.run(share())
    with psycopg.connect(clean_db, autocommit=True) as conn:
        [message] = conn.execute(
            "INSERT INTO dead_letter_messages (received_at, payload) VALUES (%s, 'x')"
            " RETURNING message_id",
            (now,),
        ).fetchone() or (None,)
        conn.execute(
            "INSERT INTO dead_letters (received_at, reason, detail, park_id, message_id, refused)"
            " VALUES (%s, 'out_of_range', 'secret detail', 'p1', %s, 3)",
            (now, message),
        )
        conn.execute(f"ALTER ROLE {ROLE} LOGIN")
    try:
        yield make_conninfo(clean_db, user=ROLE, password="")
    finally:
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {ROLE} NOLOGIN")


def test_every_dashboard_query_returns_rows_as_the_read_only_role(grafana: str) -> None:
    """Each panel's and variable's SQL, expanded as Grafana would, returns rows."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=6), now + timedelta(minutes=1)
    queries = panel_queries() + variable_queries()
    assert len(queries) >= 10
    with psycopg.connect(grafana, autocommit=True) as conn:
        for title, sql in queries:
            rows = conn.execute(expand(sql, start, end, ["p1", "p2"]).encode()).fetchall()
            assert rows, f"{title!r} returned no rows"
        alarms = next(sql for title, sql in panel_queries() if title == "Alarms now")
        found = conn.execute(expand(alarms, start, end, ["p1"]).encode()).fetchall()
        assert {(r[1], r[3]) for r in found} == {("l1", "state"), ("e1", "temp_c")}


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO parks (park_id) VALUES ('intruder')",
        "DELETE FROM park_signals_1m",
        "UPDATE delivery_1m SET stored = 0",
        "SELECT * FROM mqtt_credentials",
        "SELECT * FROM api_keys",
        "SELECT * FROM readings LIMIT 1",
        "SELECT detail FROM dead_letters",
        "SELECT payload FROM dead_letter_messages",
        "CREATE TABLE grafana_was_here (x int)",
    ],
)
def test_the_grafana_role_cannot_write_or_read_beyond_the_dashboard(
    grafana: str, statement: str
) -> None:
    """Writes, DDL, secrets, raw readings and dead-letter payloads are all refused."""
    with psycopg.connect(grafana, autocommit=True) as conn, pytest.raises(psycopg.Error) as error:
        conn.execute(statement.encode())
    assert isinstance(
        error.value, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction
    ), error.value


def test_the_data_source_uses_the_role_and_keeps_no_password() -> None:
    """The provisioned data source is the dashboard's, logs in as the role, password from env."""
    [source] = yaml.safe_load(DATASOURCE.read_text(encoding="utf-8"))["datasources"]
    assert source["user"] == ROLE
    assert source["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"  # noqa: S105 - a placeholder
    uids = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
