"""The private PostgreSQL cluster: TimescaleDB, restarts, databases, refusal to share, passwords."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.stack.errors import ServiceStartError, StackError
from services.stack.postgres import SETTINGS_FILE, PostgresCluster
from services.stack.stack import Stack
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


def _connect_error(conninfo: str, **override: str) -> str:
    """Return why a connection with ``override`` applied to ``conninfo`` was refused."""
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(make_conninfo(conninfo, **override), connect_timeout=5).close()
    return str(refused.value)


def assert_password_required(cluster: PostgresCluster, no_passfile: Path) -> None:
    """Over TCP and the socket: no password and a wrong one are refused, the right one works."""
    for host in (cluster.host, str(cluster.data_dir)):
        conninfo = make_conninfo(cluster.conninfo(), host=host, passfile=str(no_passfile))
        without = _connect_error(conninfo, password="")
        assert "no password supplied" in without
        wrong = _connect_error(conninfo, password="not-the-password")  # noqa: S106 - a wrong one
        assert "password authentication failed" in wrong
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (cluster.superuser,)


def test_test_cluster_refuses_connections_without_the_password(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """The fixture's cluster authenticates every connection (SCRAM), over TCP and the socket."""
    assert_password_required(pg_cluster, tmp_path / "no-pgpass")
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
        encryption = conn.execute("SHOW password_encryption").fetchone()
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
        ).fetchone()
    assert methods == [("scram-sha-256",)]
    assert encryption == ("scram-sha-256",)
    assert stored is not None
    assert stored[0].startswith("SCRAM-SHA-256$")


def test_password_file_is_private_and_never_logged(pg_cluster: PostgresCluster) -> None:
    """The secret is 0600 in a 0700 folder, owned by us; initdb's copy is gone; no log holds it."""
    password = pg_cluster.password
    assert password is not None
    secret = pg_cluster.password_file
    assert secret.read_text(encoding="utf-8") == password.get_secret_value() + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert secret.stat().st_uid == os.geteuid()
    assert list(pg_cluster.data_dir.parent.glob(".*initdb-password")) == []
    log = pg_cluster.log_file.read_text(encoding="utf-8", errors="replace")
    assert password.get_secret_value() not in log


def _old_trust_cluster(base: Path) -> PostgresCluster:
    """Make a cluster as parksense did before passwords: ``initdb --auth=trust``."""
    cluster = PostgresCluster(base / "data", free_port(), settings=TEST_CLUSTER_SETTINGS)
    cluster.data_dir.mkdir(mode=0o700)
    cluster._give_to_server_user(cluster.data_dir)
    initdb = [str(cluster.bin_dir / "initdb"), "--pgdata", str(cluster.data_dir), "--auth=trust"]
    initdb += ["--username", cluster.superuser, "--encoding=UTF8", "--locale=C"]
    cluster._run(initdb)
    with (cluster.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"\ninclude '{SETTINGS_FILE}'\n")
    cluster._write_settings()
    return cluster


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_trust_cluster_of_an_earlier_version_is_upgraded(
    running: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trust cluster, stopped or running, starts with a password; a restart changes nothing."""
    base = make_temp_dir("parksense-test-pg-trust-")
    cluster = _old_trust_cluster(base)
    try:
        assert cluster.trusts_connections()
        assert not cluster.password_file.exists()
        if running:
            cluster._start_server()
            no_password = make_conninfo(cluster.conninfo(), passfile=str(tmp_path / "none"))
            with psycopg.connect(no_password) as conn:  # Trusted, as before.
                conn.execute("SELECT 1")
        with caplog.at_level(logging.INFO, logger="services.stack.postgres"):
            cluster.start()
            cluster.restart()
        upgrades = [r for r in caplog.records if "to password authentication" in r.getMessage()]
        assert len(upgrades) == 1
        assert not cluster.trusts_connections()
        password = cluster.password
        assert password is not None
        assert stat.S_IMODE(cluster.password_file.stat().st_mode) == 0o600
        assert password.get_secret_value() not in caplog.text
        assert password.get_secret_value() not in cluster.log_file.read_text(encoding="utf-8")
        assert_password_required(cluster, tmp_path / "no-pgpass")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_local_stack_database_requires_its_secret(tmp_path: Path) -> None:
    """The stack's cluster keeps its password in <state>/secrets; the stack and children use it."""
    base = make_temp_dir("parksense-test-stack-db-")
    stack = Stack(
        StackSettings(state_dir=base / "state", ingest_metrics_base_port=free_port()),
        DatabaseSettings(port=free_port()),
        MqttSettings(port=free_port()),
        ApiSettings(port=free_port()),
    )
    try:
        assert stack.db.password is None  # No cluster, no secret yet.
        stack.postgres.start()
        secret = base / "state" / "secrets" / "db.password"
        assert stack.postgres.password_file == secret
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = stack.db.password
        assert password is not None
        assert password.get_secret_value() == secret.read_text(encoding="utf-8").strip()
        assert stack.child_env()["PARKSENSE_DB_PASSWORD"] == password.get_secret_value()
        assert_password_required(stack.postgres, tmp_path / "no-pgpass")
        assert password.get_secret_value() not in stack.postgres.log_file.read_text(
            encoding="utf-8"
        )
    finally:
        stack.postgres.stop()
        shutil.rmtree(base, ignore_errors=True)
