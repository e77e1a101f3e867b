"""The local stack under the state folder: database, broker, ingest, maintenance, API, simulator."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.access.sync import BrokerSync
from services.config import (
    ApiSettings,
    BrokerAuthSettings,
    DatabaseSettings,
    MqttSettings,
    StackSettings,
)
from services.core.access import CredentialKind, PlatformRole, client_id, username
from services.stack.errors import ServiceStartError
from services.stack.mosquitto import MosquittoBroker, find_mosquitto
from services.stack.postgres import PostgresCluster, check_timescaledb, find_bin_dir
from services.stack.processes import (
    ManagedProcess,
    ensure_port_free,
    pid_alive,
    port_open,
    wait_until,
)
from services.stack.state_secrets import (
    db_password_file,
    local_database,
    secrets_dir,
    write_secret,
)
from services.storage.credentials import (
    issue_credential,
    new_password,
    platform_password_valid,
)
from services.storage.migrate import apply_migrations

logger = logging.getLogger(__name__)

# Seconds a service gets to become ready: ingest connects to the broker and the database
# and loads the registry; the API opens its pool.
READY_TIMEOUT_S = 60.0
# Ingest worker i serves Prometheus metrics on this port + i - 1.
INGEST_MODULE = "services.ingest"
# Every child learns the number of ingest workers from this variable (IngestSettings.workers).
WORKERS_VARIABLE = "PARKSENSE_INGEST_WORKERS"
# A retired worker is stopped once it has received nothing for this long (its session has
# no subscription left, so only what was queued before arrives) ...
RETIRE_QUIET_S = 2.0
# ... as seen on its metrics page, read this often.
RETIRE_POLL_S = 0.2
API_MODULE = "services.api"
MAINTENANCE_MODULE = "services.maintenance"
SIMULATOR_MODULE = "simulators"
# Seconds the simulator (or the maintenance process, which has no port either) must survive
# after its start to count as started.
SIMULATOR_GRACE_S = 1.0
# Ingest serves metrics on all or loopback addresses; either answers here.
METRICS_PROBE_HOST = "127.0.0.1"
# The folder holding the `services` package: children run `-m services.…` from here, so
# they import the same code as this command.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One row of ``parksense status``."""

    name: str
    running: bool
    pid: int | None
    address: str
    log_file: Path


def settings_env(settings: BaseSettings) -> dict[str, str]:
    """Return ``settings`` as the ``PARKSENSE_*`` variables that would produce them."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        env[f"{prefix}{name}".upper()] = text
    return env


def http_ok(host: str, port: int, path: str, timeout_s: float = 1.0) -> bool:
    """Return whether ``GET http://host:port/path`` answers 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == http.client.OK
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def ingest_metrics(host: str, port: int, timeout_s: float = 1.0) -> dict[str, float]:
    """Return an ingest worker's unlabelled Prometheus samples (empty when it is away)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return {}
    finally:
        conn.close()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            with contextlib.suppress(ValueError):
                figures[name] = float(value)
    return figures


def ingest_client_id(worker: int) -> str:
    """Return the MQTT client id (and persistent session) of ingest worker ``worker``."""
    return client_id(username(CredentialKind.PLATFORM, PlatformRole.INGEST), str(worker))


def secret_file(state_dir: Path, role: PlatformRole) -> Path:
    """Return the file holding the MQTT password of platform ``role`` in a state folder."""
    return secrets_dir(state_dir) / f"mqtt-{role.value}.password"


def platform_mqtt_settings(state_dir: Path, role: PlatformRole, mqtt: MqttSettings) -> MqttSettings:
    """Return ``mqtt`` with the local stack's credential of ``role``, when it has one."""
    path = secret_file(state_dir, role)
    if mqtt.username is not None or not path.exists():
        return mqtt
    return mqtt.model_copy(
        update={
            "username": username(CredentialKind.PLATFORM, role.value),
            "password": SecretStr(path.read_text(encoding="utf-8").strip()),
        }
    )


def check_installed() -> None:
    """Make sure PostgreSQL, TimescaleDB and Mosquitto are installed.

    Raises:
        MissingComponentError: One is missing; the message says how to install it.
    """
    check_timescaledb(find_bin_dir())
    find_mosquitto()


def format_status(rows: list[ServiceStatus]) -> str:
    """Return ``rows`` as a plain-text table."""
    table = [("SERVICE", "STATE", "PID", "ADDRESS", "LOG")]
    table += [
        (
            row.name,
            "running" if row.running else "stopped",
            str(row.pid) if row.pid is not None else "-",
            row.address,
            str(row.log_file),
        )
        for row in rows
    ]
    widths = [max(len(line[col]) for line in table) for col in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


class Stack:
    """Starts, stops and reports the local stack; every process is tracked in the state folder.

    Layout of the state folder: ``postgres/`` (data), ``mosquitto/`` (config and
    persistence), ``secrets/`` (the database and platform MQTT passwords, 0600),
    ``run/*.pid``, ``logs/*.log``.
    """

    def __init__(
        self,
        stack: StackSettings,
        db: DatabaseSettings,
        mqtt: MqttSettings,
        api: ApiSettings,
        *,
        python: str = sys.executable,
        ready_timeout_s: float = READY_TIMEOUT_S,
        postgres_settings: Mapping[str, str | int] | None = None,
    ) -> None:
        """Describe the stack; nothing starts until ``up``.

        Args:
            stack: The state folder and the number of ingest workers.
            db: Where the local PostgreSQL listens and the database it serves.
            mqtt: Where the local Mosquitto listens.
            api: Where the API listens.
            python: Interpreter that runs the parksense services.
            ready_timeout_s: Deadline for each service to become ready.
            postgres_settings: Server settings over the cluster's defaults (a benchmark's
                instrumentation); they take effect when the cluster starts.
        """
        self.settings = stack
        self._db = db
        self.mqtt = mqtt
        self.api = api
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        # Worker i exports its metrics on this port plus i - 1.
        self.ingest_metrics_base_port = stack.ingest_metrics_base_port
        self.state_dir = stack.state_dir.absolute()
        self.run_dir = self.state_dir / "run"
        self.logs_dir = self.state_dir / "logs"
        self.postgres = PostgresCluster(
            self.state_dir / "postgres",
            db.port,
            db.host,
            log_file=self.logs_dir / "postgres.log",
            superuser=db.user,
            password_file=db_password_file(self.state_dir),
            password=db.password,
            settings=postgres_settings,
        )
        self.broker = MosquittoBroker(
            self.state_dir / "mosquitto",
            mqtt.port,
            mqtt.host,
            log_file=self.logs_dir / "mosquitto.log",
            pid_file=self.run_dir / "mosquitto.pid",
        )

    @property
    def db(self) -> DatabaseSettings:
        """The database settings with the local database's password (once it has one)."""
        return local_database(self.state_dir, self._db)

    # -- processes --------------------------------------------------------------------

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the environment of a parksense child process: ours plus the stack's settings."""
        env = dict(os.environ)
        for settings in (self.db, self.mqtt, self.api):
            env.update(settings_env(settings))
        env["PARKSENSE_STATE_DIR"] = str(self.state_dir)
        env[WORKERS_VARIABLE] = str(self.settings.ingest_workers)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    @property
    def broker_auth(self) -> BrokerAuthSettings:
        """Where the local broker's credential files and pid are."""
        return BrokerAuthSettings(auth_dir=self.broker.auth_dir, pid_file=self.broker.pid_file)

    def broker_sync(self) -> BrokerSync:
        """Return the sync that puts credential changes in force at the local broker."""
        return BrokerSync(self.broker_auth, self.mqtt)

    def _role_env(self, role: PlatformRole) -> dict[str, str]:
        """The MQTT credential of platform ``role`` as ``PARKSENSE_MQTT_*`` variables.

        Empty before the first ``up`` made it (``status`` and ``down`` need no credential).
        """
        path = secret_file(self.state_dir, role)
        if not path.exists():
            return {}
        password = path.read_text(encoding="utf-8").strip()
        return {
            "PARKSENSE_MQTT_USERNAME": username(CredentialKind.PLATFORM, role.value),
            "PARKSENSE_MQTT_PASSWORD": password,
        }

    def _prepare_broker_auth(self) -> None:
        """Make sure each platform role has a credential, and render the broker's files.

        A role's password lives in the state folder (readable by its owner only) and as a
        hash in the database; a password that no longer matches the database (a new
        database, say) is replaced.
        """
        conninfo = self.db.conninfo(application_name="parksense-stack")
        with psycopg.connect(conninfo) as conn:
            for role in PlatformRole:
                path = secret_file(self.state_dir, role)
                password = path.read_text(encoding="utf-8").strip() if path.exists() else ""
                if password and platform_password_valid(conn, role.value, password):
                    continue
                password = new_password()
                issue_credential(conn, CredentialKind.PLATFORM, role.value, password)
                write_secret(path, password)
        self.broker.write_config()
        self.broker_sync().sync(conninfo)

    def _service(self, name: str, args: list[str], extra_env: Mapping[str, str]) -> ManagedProcess:
        return ManagedProcess(
            name,
            [self.python, *args],
            pid_file=self.run_dir / f"{name}.pid",
            log_file=self.logs_dir / f"{name}.log",
            env=self.child_env(extra_env),
            cwd=PROJECT_ROOT,
            match=args[:3] if args[:2] == ["-m", SIMULATOR_MODULE] else args,
        )

    def ingest_metrics_port(self, worker: int) -> int:
        """Return the Prometheus port of ingest worker ``worker`` (from 1)."""
        return self.ingest_metrics_base_port + worker - 1

    def ingest_worker(self, worker: int) -> ManagedProcess:
        """Return ingest worker ``worker`` (from 1)."""
        return self._service(
            f"ingest-{worker}",
            ["-m", INGEST_MODULE],
            {
                **self._role_env(PlatformRole.INGEST),
                "PARKSENSE_INGEST_CLIENT_ID": ingest_client_id(worker),
                "PARKSENSE_INGEST_METRICS_PORT": str(self.ingest_metrics_port(worker)),
                # Worker i of N (PARKSENSE_INGEST_WORKERS, in every child's environment)
                # takes its factories on plain persistent subscriptions, which Mosquitto 2.0
                # restores after a restart (shared ones it does not).
                "PARKSENSE_INGEST_WORKER_INDEX": str(worker),
            },
        )

    def api_process(self) -> ManagedProcess:
        """Return the API service."""
        return self._service(
            "api",
            ["-m", API_MODULE],
            {**self._role_env(PlatformRole.API), **settings_env(self.broker_auth)},
        )

    def maintenance_process(self) -> ManagedProcess:
        """Return the maintenance process (roll-ups, availability, retention, shared signals)."""
        return self._service(
            "maintenance",
            ["-m", MAINTENANCE_MODULE],
            {
                **self._role_env(PlatformRole.MAINTENANCE),
                "PARKSENSE_MAINTENANCE_ONLINE_TIMEOUT_S": str(self.api.online_timeout_s),
                "PARKSENSE_SHARING_SIGNAL_WINDOW_S": str(self.api.signal_window_s),
            },
        )

    def _start_maintenance(self) -> bool:
        """Start the maintenance process unless it runs; it must survive its first moments."""
        process = self.maintenance_process()
        if process.is_running():
            return False
        pid = process.start()
        if wait_until(lambda: not pid_alive(pid), SIMULATOR_GRACE_S):
            raise ServiceStartError("maintenance", "exited during start-up", process.log_file)
        return True

    def simulator_process(self, fleet_file: Path, extra_args: Sequence[str] = ()) -> ManagedProcess:
        """Return the background simulator publishing for ``fleet_file``."""
        return self._service(
            "simulator",
            ["-m", SIMULATOR_MODULE, "run", "--fleet", str(fleet_file), *extra_args],
            self._role_env(PlatformRole.SIMULATOR),
        )

    def _known_workers(self) -> list[int]:
        """Return the ingest workers that have a pid file, configured or left over."""
        numbers = {
            int(path.stem.removeprefix("ingest-"))
            for path in self.run_dir.glob("ingest-*.pid")
            if path.stem.removeprefix("ingest-").isdigit()
        }
        return sorted(numbers | set(range(1, self.settings.ingest_workers + 1)))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise ``up`` and ``down`` between concurrent ``parksense`` commands."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "stack.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- lifecycle --------------------------------------------------------------------

    def up(self) -> list[str]:
        """Start every part of the stack that is not running, and wait until each is ready.

        Returns:
            The names of the parts it started (empty when everything was running).

        Raises:
            MissingComponentError: PostgreSQL, TimescaleDB or Mosquitto is not installed.
            ServiceStartError: A part did not start or become ready; the message names its log.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        with self._locked():
            if not self.postgres.is_running():
                started.append("postgres")
            # Also upgrades a running cluster made without passwords by an earlier version.
            self.postgres.start()
            self._prepare_database()
            self._prepare_broker_auth()
            if not self.broker.is_running():
                self.broker.start()
                started.append("mosquitto")
            started += self._ingest_up()
            if self._start_maintenance():
                started.append("maintenance")
            if self._start_service(
                self.api_process(),
                (self.api.host, self.api.port),
                "stop it, or choose another port with PARKSENSE_API_PORT",
                "/healthz",
            ):
                started.append("api")
        return started

    def _ingest_up(self) -> list[str]:
        """Run workers 1..N, each knowing N; retire workers above N.

        Worker i of N owns the factories rendezvous hashing gives it, so a change of N moves
        factories only to the workers added or away from those removed. The new owner of a
        factory subscribes before the old one lets go (a moment of double delivery, stored
        once, rather than a gap): first the workers not running start, then those
        running with another count restart, then the workers above N are retired.
        """
        count = self.settings.ingest_workers
        started: list[str] = []
        restart: list[int] = []
        for worker in range(1, count + 1):
            process = self.ingest_worker(worker)
            if process.is_running():
                if self._worker_count_of(process) != count:
                    restart.append(worker)
            elif self._start_worker(worker):
                started.append(process.name)
        for worker in restart:
            self.ingest_worker(worker).stop()
            self._start_worker(worker)
            started.append(self.ingest_worker(worker).name)
        for worker in self._known_workers():
            if worker > count:
                self._retire_worker(worker)
        return started

    def _start_worker(self, worker: int) -> bool:
        """Start a worker unless it runs; it is ready once the broker has its subscriptions."""
        port = self.ingest_metrics_port(worker)
        return self._start_service(
            self.ingest_worker(worker),
            (METRICS_PROBE_HOST, port),
            f"stop it: ingest worker i serves metrics on port "
            f"{self.ingest_metrics_base_port} + i - 1",
            ready=lambda: (
                ingest_metrics(METRICS_PROBE_HOST, port).get("parksense_ingest_subscribed") == 1
            ),
        )

    @staticmethod
    def _worker_count_of(process: ManagedProcess) -> int | None:
        """Return the worker count a running ingest worker was started with."""
        pid = process.pid
        if pid is None:
            return None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return None
        prefix = f"{WORKERS_VARIABLE}=".encode()
        for entry in environ:
            if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
                return int(entry[len(prefix) :])
        return None

    def _retire_worker(self, worker: int) -> None:
        """Drain a worker above the count, then stop it.

        Its persistent session still holds its old filters and whatever was queued for it
        before their new owners subscribed. Restarted with an index above the count, it
        owns nothing: it unsubscribes everything, writes and acknowledges what the
        session holds, and is stopped once nothing has arrived for ``RETIRE_QUIET_S``.
        Should that take longer than the deadline, the rest stays in its session until a
        worker of that index runs again.
        """
        process = self.ingest_worker(worker)
        process.stop()
        if not self._start_worker(worker):
            return
        port = self.ingest_metrics_port(worker)
        quiet_since = time.monotonic()
        delivered = -1.0
        deadline = quiet_since + self.ready_timeout_s
        while time.monotonic() < deadline:
            figures = ingest_metrics(METRICS_PROBE_HOST, port)
            now = time.monotonic()
            seen = figures.get("parksense_ingest_messages_delivered_total", -1.0)
            if seen != delivered or figures.get("parksense_ingest_buffer_messages", 1.0) > 0:
                delivered, quiet_since = seen, now
            elif figures.get("parksense_ingest_connections_total", 0.0) >= 1 and (
                now - quiet_since >= RETIRE_QUIET_S
            ):
                break
            time.sleep(RETIRE_POLL_S)
        else:
            logger.warning(
                "Ingest worker %d was still draining after %.0f s; its session keeps the rest",
                worker,
                self.ready_timeout_s,
            )
        process.stop()
        logger.info("Retired ingest worker %d", worker)

    def _prepare_database(self) -> None:
        self.postgres.ensure_database(self.db.name)
        applied = apply_migrations(self.db.conninfo(application_name="parksense-stack"))
        if applied:
            logger.info("Applied migrations %s", ", ".join(f"{v:04d}" for v in applied))

    def _start_service(
        self,
        process: ManagedProcess,
        address: tuple[str, int],
        hint: str,
        health_path: str | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> bool:
        """Start ``process`` unless it runs; wait for its port (and health endpoint).

        ``ready``, when given, says when the process is ready instead of its port.
        """
        host, port = address
        if process.is_running():
            return False
        ensure_port_free(host, port, process.name, hint)

        def port_ready() -> bool:
            if health_path is None:
                return port_open(host, port)
            return http_ok(host, port, health_path)

        pid = process.start()
        try:
            process.wait_ready(pid, ready or port_ready, self.ready_timeout_s)
        except ServiceStartError:
            process.stop(timeout_s=5.0)
            raise
        return True

    def simulator_running(self) -> bool:
        """Return whether a background simulator started by ``demo`` runs."""
        return self.simulator_process(Path("-")).is_running()

    def start_simulator(self, fleet_file: Path, extra_args: Sequence[str] = ()) -> bool:
        """Start the simulator for ``fleet_file`` in the background unless one runs.

        Returns:
            True if it was started.

        Raises:
            ServiceStartError: It exited at once.
        """
        if self.simulator_running():
            return False
        process = self.simulator_process(fleet_file, extra_args)
        pid = process.start()
        # The simulator has no port; surviving its first moments means it accepted its
        # fleet file and options.
        if wait_until(lambda: not pid_alive(pid), SIMULATOR_GRACE_S):
            raise ServiceStartError("simulator", "exited during start-up", process.log_file)
        return True

    def down(self) -> list[str]:
        """Stop what ``up`` and ``demo`` started: services first, then broker, then database.

        Returns:
            The names of the parts that were running and are now stopped.
        """
        stopped: list[str] = []
        with self._locked():
            services_ = [
                self.simulator_process(Path("-")),
                self.api_process(),
                self.maintenance_process(),
                *(self.ingest_worker(worker) for worker in self._known_workers()),
            ]
            stopped += [process.name for process in services_ if process.stop()]
            if self.broker.stop():
                stopped.append("mosquitto")
            if self.postgres.stop():
                stopped.append("postgres")
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Return the state of every part of the stack."""
        rows = [
            ServiceStatus(
                "postgres",
                self.postgres.is_running(),
                self.postgres.pid,
                f"postgresql://{self.db.user}@{self.db.host}:{self.db.port}/{self.db.name}",
                self.postgres.log_file,
            ),
            ServiceStatus(
                "mosquitto",
                self.broker.is_running(),
                self.broker.pid,
                f"mqtt://{self.mqtt.host}:{self.mqtt.port}",
                self.broker.log_file,
            ),
        ]
        for worker in self._known_workers():
            process = self.ingest_worker(worker)
            port = self.ingest_metrics_port(worker)
            rows.append(self._row(process, f"http://{METRICS_PROBE_HOST}:{port}/metrics"))
        rows.append(self._row(self.maintenance_process(), "-"))
        rows.append(self._row(self.api_process(), f"http://{self.api.host}:{self.api.port}/"))
        rows.append(self._row(self.simulator_process(Path("-")), "-"))
        return rows

    @staticmethod
    def _row(process: ManagedProcess, address: str) -> ServiceStatus:
        pid = process.pid
        return ServiceStatus(process.name, pid is not None, pid, address, process.log_file)

    def dashboard_url(self) -> str:
        """Return the operators' dashboard address."""
        return f"http://{self.api.host}:{self.api.port}/"

    def api_docs_url(self) -> str:
        """Return the address of the interactive API documentation."""
        return f"http://{self.api.host}:{self.api.port}/docs"
