"""The private PostgreSQL cluster: TimescaleDB loaded, restarts, databases, refusal to share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from services.stack.errors import ServiceStartError, StackError
from services.stack.postgres import PostgresCluster
from tests.harness.environment import TEST_CLUSTER_SETTINGS, free_port, make_temp_dir


def test_migrated_test_database_has_timescaledb(db_conninfo: str) -> None:
    """The migrations create the TimescaleDB extension, preloaded by the cluster."""
    with psycopg.connect(db_conninfo) as conn:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        telemetry = conn.execute("SHOW timescaledb.telemetry_level").fetchone()
    assert version is not None
    assert version[0].split(".")[0] == "2"
    assert preload == ("timescaledb",)
    assert telemetry == ("off",)


def test_cluster_listens_only_where_told(pg_cluster: PostgresCluster) -> None:
    """The cluster listens on its own address and port and keeps durable commits."""
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('listen_addresses', 'port', 'synchronous_commit', 'max_connections',"
                " 'unix_socket_directories')"
            ).fetchall()
        )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == str(pg_cluster.port)
    assert settings["synchronous_commit"] == "on"
    assert settings["max_connections"] == "100"
    assert settings["unix_socket_directories"] == str(pg_cluster.data_dir)


def test_server_does_not_run_as_root(pg_cluster: PostgresCluster) -> None:
    """As root, the server runs as the postgres system user; otherwise as ourselves."""
    pid = pg_cluster.pid
    assert pid is not None
    owner = Path(f"/proc/{pid}").stat().st_uid
    assert owner != 0
    if os.geteuid() != 0:
        assert owner == os.geteuid()


def test_ensure_database_creates_once(pg_cluster: PostgresCluster) -> None:
    """ensure_database creates a missing database and leaves an existing one alone."""
    assert pg_cluster.ensure_database("parksense_ensure_once") is True
    assert pg_cluster.ensure_database("parksense_ensure_once") is False
    with psycopg.connect(pg_cluster.conninfo("parksense_ensure_once")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("parksense_ensure_once",)


def test_restart_keeps_committed_rows(pg_cluster: PostgresCluster) -> None:
    """A committed row survives a restart of the cluster, which comes back on its port."""
    pg_cluster.ensure_database("parksense_restart_probe")
    conninfo = pg_cluster.conninfo("parksense_restart_probe")
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS probe")
        conn.execute("CREATE TABLE probe (n int)")
        conn.execute("INSERT INTO probe VALUES (42)")
    old_pid = pg_cluster.pid
    pg_cluster.restart()
    assert pg_cluster.is_running()
    assert pg_cluster.pid != old_pid
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT n FROM probe").fetchall() == [(42,)]


def test_stopped_cluster_reports_no_pid() -> None:
    """A cluster that was never started is not running and has no pid; stop is a no-op."""
    base = make_temp_dir("parksense-test-pg-idle-")
    try:
        cluster = PostgresCluster(base / "data", free_port())
        assert not cluster.is_running()
        assert cluster.pid is None
        assert cluster.stop() is False
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_start_refuses_a_port_in_use(pg_cluster: PostgresCluster) -> None:
    """A second cluster on a taken port fails with a message naming the port setting."""
    base = make_temp_dir("parksense-test-pg-taken-")
    other = PostgresCluster(base / "data", pg_cluster.port, settings=TEST_CLUSTER_SETTINGS)
    try:
        with pytest.raises(ServiceStartError, match="PARKSENSE_DB_PORT"):
            other.start()
        assert not other.is_running()
    finally:
        other.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_init_refuses_a_folder_holding_something_else() -> None:
    """The init method will not run initdb over a non-empty folder that is not a cluster."""
    base = make_temp_dir("parksense-test-pg-busy-")
    try:
        (base / "data").mkdir()
        (base / "data" / "notes.txt").write_text("mine", encoding="utf-8")
        cluster = PostgresCluster(base / "data", free_port())
        with pytest.raises(StackError, match="not empty"):
            cluster.init()
        assert (base / "data" / "notes.txt").read_text(encoding="utf-8") == "mine"
    finally:
        shutil.rmtree(base, ignore_errors=True)
