"""The local stack: `up` starts what is not running (a crashed service too), `down` stops it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg

from services.stack.processes import pid_alive, port_open
from services.stack.stack import Stack, http_ok
from tests.harness.waiting import wait_until


def running(stack: Stack) -> dict[str, bool]:
    """Return each part of the stack by name, with whether it runs."""
    return {row.name: row.running for row in stack.status()}


def test_up_starts_everything_and_down_stops_it(stack: Stack) -> None:
    """Up starts database, broker, ingest, maintenance and API, ready; down stops them all."""
    started = stack.up()
    assert started == ["postgres", "mosquitto", "ingest-1", "maintenance", "api"]
    assert running(stack) == {
        "postgres": True,
        "mosquitto": True,
        "ingest-1": True,
        "maintenance": True,
        "api": True,
        "simulator": False,
    }
    assert http_ok(stack.api.host, stack.api.port, "/healthz")
    with psycopg.connect(stack.db.conninfo()) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        assert row.fetchone() is not None
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() != (0,)
    for name in ("api", "ingest-1", "maintenance", "mosquitto"):
        assert (stack.run_dir / f"{name}.pid").is_file()
        assert (stack.logs_dir / f"{name}.log").is_file()
    assert (stack.logs_dir / "postgres.log").is_file()
    # Maintenance got the maintenance MQTT credential and leads the signals publisher.
    maintenance_log = stack.logs_dir / "maintenance.log"
    wait_until(
        lambda: (
            "Leading: sharing park signals as parksense.maintenance."
            in (maintenance_log.read_text(encoding="utf-8"))
        ),
        30,
        message="maintenance never led the signals publisher with its MQTT credential",
    )

    assert stack.up() == []  # Everything runs: nothing to do.

    pids = [row.pid for row in stack.status() if row.pid is not None]
    stopped = stack.down()
    assert stopped == ["api", "maintenance", "ingest-1", "mosquitto", "postgres"]
    assert not any(running(stack).values())
    assert not any(pid_alive(pid) for pid in pids)
    assert not port_open(stack.api.host, stack.api.port)
    assert not port_open(stack.mqtt.host, stack.mqtt.port)
    assert not port_open(stack.db.host, stack.db.port)
    assert list(stack.run_dir.glob("*.pid")) == []
    assert stack.down() == []


def test_up_restarts_a_crashed_api(stack: Stack) -> None:
    """After the API dies, up starts the API again and leaves the rest alone."""
    stack.up()
    before = {row.name: row.pid for row in stack.status()}
    api_pid = before["api"]
    assert api_pid is not None
    os.kill(api_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(api_pid), timeout_s=10, message="the API outlived SIGKILL")
    assert running(stack)["api"] is False

    assert stack.up() == ["api"]
    after = {row.name: row.pid for row in stack.status()}
    assert after["api"] not in (None, api_pid)
    assert {k: v for k, v in after.items() if k != "api"} == {
        k: v for k, v in before.items() if k != "api"
    }
    assert http_ok(stack.api.host, stack.api.port, "/healthz")


def test_pid_file_of_another_program_counts_as_not_running(stack: Stack) -> None:
    """A pid file naming a process with another command line is stale: never signalled."""
    stack.run_dir.mkdir(parents=True)
    (stack.run_dir / "api.pid").write_text(f"{os.getpid()}\n", encoding="ascii")
    (stack.run_dir / "ingest-1.pid").write_text("999999999\n", encoding="ascii")
    assert running(stack)["api"] is False
    assert running(stack)["ingest-1"] is False
    assert stack.down() == []  # This test process is still here to check it.
    assert not (stack.run_dir / "api.pid").exists()


def test_settings_reach_the_services(stack: Stack) -> None:
    """Children get the stack's addresses and their worker identity as PARKSENSE_* variables."""
    env = stack.ingest_worker(2).env or {}
    assert env["PARKSENSE_DB_PORT"] == str(stack.db.port)
    assert env["PARKSENSE_MQTT_PORT"] == str(stack.mqtt.port)
    assert env["PARKSENSE_API_PORT"] == str(stack.api.port)
    assert env["PARKSENSE_INGEST_CLIENT_ID"] == "parksense.ingest.2"
    assert env["PARKSENSE_INGEST_METRICS_PORT"] == str(stack.ingest_metrics_base_port + 1)
    assert env["PARKSENSE_INGEST_WORKER_INDEX"] == "2"
    assert env["PARKSENSE_INGEST_WORKERS"] == "1"
    assert "PARKSENSE_INGEST_SHARE_GROUP" not in env
    assert Path(env["PARKSENSE_STATE_DIR"]) == stack.state_dir
