"""A private PostgreSQL + TimescaleDB cluster in a folder of its own (initdb + pg_ctl)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from services.config import DatabaseSettings
from services.stack.errors import MissingComponentError, ServiceStartError, StackError
from services.stack.processes import (
    ensure_port_free,
    pid_alive,
    read_cmdline,
    read_pid_file,
    wait_until,
)
from services.stack.state_secrets import (
    db_password_file,
    new_db_password,
    resolve_password,
    write_secret,
)

logger = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; as root we run it as this system user (made by the
# Debian package).
POSTGRES_OS_USER = "postgres"
PG_LIB_ROOT = Path("/usr/lib/postgresql")
# Seconds pg_ctl waits for the server to start or stop. Start-up includes crash recovery
# after a SIGKILL, which replays WAL since the last checkpoint.
PG_CTL_TIMEOUT_S = 120
# Seconds to wait for the remains of a killed server (a zombie postmaster, backends that
# have not noticed yet) before starting a new one.
STALE_SERVER_TIMEOUT_S = 15.0
# What the server log says when such remains are still there.
_PREVIOUS_SERVER_SIGNS = ('lock file "postmaster.pid" already exists', "is still in use")
# Our settings live in their own file, included from postgresql.conf and rewritten at
# every start, so a port change takes effect without touching initdb's file.
SETTINGS_FILE = "parksense.conf"
# Every connection, over the socket or TCP, authenticates with the superuser's password
# (SCRAM-SHA-256, never sent in clear); initdb writes this file and an upgrade from a
# cluster made with trust authentication rewrites it.
HBA_FILE = "pg_hba.conf"
AUTH_METHOD = "scram-sha-256"
HBA_LINES = (
    "# Written by parksense: every connection authenticates with a password (SCRAM).",
    "# TYPE  DATABASE     USER  ADDRESS       METHOD",
    f"local   all          all                 {AUTH_METHOD}",
    f"host    all          all   127.0.0.1/32  {AUTH_METHOD}",
    f"host    all          all   ::1/128       {AUTH_METHOD}",
    f"local   replication  all                 {AUTH_METHOD}",
    f"host    replication  all   127.0.0.1/32  {AUTH_METHOD}",
    f"host    replication  all   ::1/128       {AUTH_METHOD}",
)
# Seconds a reload of pg_hba.conf may take to be in force (the postmaster reads it on SIGHUP).
HBA_RELOAD_TIMEOUT_S = 10.0
# Seconds a probe connection may take (the server runs on this machine).
CONNECT_TIMEOUT_S = 5
# What the server answers a wrong password with (FATAL 28P01, whose SQLSTATE libpq does not
# pass on for a connection attempt; the cluster's messages are in the C locale).
_REFUSED_PASSWORD_SIGN = "password authentication failed"  # noqa: S105 - a message, no secret

# Small-machine defaults. Durability stays on (fsync, synchronous_commit): ingest
# acknowledges a reading to the broker only after its commit, so a commit must mean it.
DEFAULT_SETTINGS: Mapping[str, str | int] = {
    "max_connections": 100,
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "64MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # Ingest writes ~500 bytes of WAL per stored reading at full load; at the default 1 GB
    # checkpoints ran back to back, each making the next touch of every page log a full
    # page image (issue 10's load, two workers: 16.4 -> 14.4 us of PostgreSQL CPU a
    # reading with 4 GB). The WAL only grows that large under sustained load, and crash
    # recovery after it replays up to about this much.
    "max_wal_size": "4GB",
    # TimescaleDB takes a lock per chunk; queries over months touch many chunks.
    "max_locks_per_transaction": 256,
    # JIT compiles for hundreds of milliseconds on queries that run in a few (measured on
    # the availability query: 715 of 740 ms); parksense's queries are short.
    "jit": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "password_encryption": AUTH_METHOD,
    "shared_preload_libraries": "timescaledb",
    "timescaledb.telemetry_level": "off",
}


def _quote(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path:
    """Return the binaries of the newest installed PostgreSQL (``/usr/lib/postgresql/*/bin``).

    Raises:
        MissingComponentError: No PostgreSQL server is installed.
    """
    candidates = [path for path in PG_LIB_ROOT.glob("*/bin") if (path / "postgres").is_file()]
    if candidates:
        return max(candidates, key=_version_key)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (Path(out) / "postgres").is_file() and (Path(out) / "initdb").is_file():
            return Path(out)
    raise MissingComponentError("PostgreSQL", "no initdb/postgres under /usr/lib/postgresql")


def check_timescaledb(bin_dir: Path) -> None:
    """Make sure the TimescaleDB extension is installed for the PostgreSQL in ``bin_dir``.

    Raises:
        MissingComponentError: The shared library or the extension files are missing.
    """
    pg_config = bin_dir / "pg_config"
    if not pg_config.is_file():
        pg_config = Path(shutil.which("pg_config") or "pg_config")
    try:
        out = subprocess.run(
            [str(pg_config), "--pkglibdir", "--sharedir"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise MissingComponentError("PostgreSQL", f"cannot run {pg_config}: {exc}") from exc
    pkglibdir, sharedir = Path(out[0]), Path(out[1])
    library = pkglibdir / "timescaledb.so"
    control = sharedir / "extension" / "timescaledb.control"
    for path in (library, control):
        if not path.is_file():
            raise MissingComponentError(
                f"TimescaleDB for PostgreSQL {bin_dir.parent.name}", f"{path} is missing"
            )


def running_as_root() -> bool:
    """Return whether this process has root privileges (PostgreSQL must then drop them)."""
    return os.geteuid() == 0


class PostgresCluster:
    """One PostgreSQL cluster owned by parksense: its own data folder, port and socket."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        log_file: Path | None = None,
        superuser: str = "parksense",
        settings: Mapping[str, str | int] | None = None,
        password_file: Path | None = None,
        password: SecretStr | None = None,
    ) -> None:
        """Describe the cluster; nothing is created or started yet.

        Args:
            data_dir: Its data folder (created by ``init``). The Unix socket lives here too.
            port: TCP port it listens on.
            host: Address it listens on (``listen_addresses``).
            log_file: Server log; defaults to ``postgres.log`` beside the data folder.
            superuser: Name of the bootstrap superuser (password authentication).
            settings: Server settings overriding ``DEFAULT_SETTINGS``.
            password_file: The superuser's password (0600), written when the cluster is
                made; defaults to ``secrets/db.password`` beside the data folder, as in the
                local stack's state folder.
            password: An explicit password (``PARKSENSE_DB_PASSWORD``), which wins over the
                file's; a new cluster gets it, else a random one.
        """
        self.data_dir = data_dir.absolute()
        self.port = port
        self.host = host
        self.log_file = (log_file or self.data_dir.parent / "postgres.log").absolute()
        self.superuser = superuser
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.password_file = (password_file or db_password_file(self.data_dir.parent)).absolute()
        self._explicit_password = password
        self._bin_dir: Path | None = None

    # -- helpers ----------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        """Folder of initdb, pg_ctl and postgres (the newest installed version)."""
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def _as_server_user(self, argv: Sequence[str]) -> list[str]:
        if running_as_root():
            return ["runuser", "-u", POSTGRES_OS_USER, "--", *argv]
        return list(argv)

    def _run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd "/": pg_ctl resolves its working directory, which the server user may not reach.
        return subprocess.run(
            self._as_server_user(argv),
            capture_output=True,
            text=True,
            check=check,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )

    def _give_to_server_user(self, path: Path) -> None:
        if running_as_root():
            user = pwd.getpwnam(POSTGRES_OS_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _check_reachable(self, path: Path) -> None:
        """Fail clearly when the server user cannot write ``path`` (a parent is closed)."""
        if not running_as_root():
            return
        if self._run(["test", "-w", str(path)], check=False).returncode == 0:
            return
        closed = next(
            (
                parent
                for parent in reversed(path.parents)
                if not parent.stat().st_mode & stat.S_IXOTH
            ),
            path.parent,
        )
        raise StackError(
            f"PostgreSQL runs as the system user {POSTGRES_OS_USER!r}, which cannot reach "
            f"{path}: {closed} is not searchable by other users; run `chmod o+x {closed}`, "
            "or set PARKSENSE_STATE_DIR to a folder it can reach (e.g. /var/tmp/parksense)"
        )

    def _write_settings(self) -> None:
        settings: dict[str, str | int] = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.data_dir),
            **self.settings,
        }
        lines = ["# Written by parksense at every start; edits are overwritten."]
        lines += [f"{name} = {_quote(value)}" for name, value in settings.items()]
        path = self.data_dir / SETTINGS_FILE
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._give_to_server_user(path)

    # -- lifecycle --------------------------------------------------------------------

    def is_initialized(self) -> bool:
        """Return whether the data folder holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self) -> bool:
        """Create the cluster with initdb unless the data folder already holds one.

        Returns:
            True if initdb ran.

        Raises:
            MissingComponentError: PostgreSQL or TimescaleDB is not installed.
            StackError: The data folder holds something else, or initdb failed.
        """
        check_timescaledb(self.bin_dir)
        if self.is_initialized():
            self._write_settings()
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster; "
                "move it away or choose another state folder"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._give_to_server_user(self.data_dir)
        self._check_reachable(self.data_dir)
        logger.info("Creating PostgreSQL cluster in %s", self.data_dir)
        with self._initdb_password_file(self._settle_password()) as pwfile:
            initdb = [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                f"--auth={AUTH_METHOD}",
                f"--pwfile={pwfile}",
                "--username",
                self.superuser,
                "--encoding=UTF8",
                "--locale=C",
            ]
            result = self._run(initdb, check=False)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {(result.stderr or result.stdout).strip()}")
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n# parksense settings\ninclude '{SETTINGS_FILE}'\n")
        self._write_hba()
        self._write_settings()
        return True

    # -- authentication ---------------------------------------------------------------

    @property
    def password(self) -> SecretStr | None:
        """The superuser's password: the explicit one, else the file's (None before ``init``)."""
        return resolve_password(self._explicit_password, self.password_file)

    def _settle_password(self) -> str:
        """Return the password a new or upgraded cluster gets, recorded in the password file.

        The explicit password, else the file's, else a new random one.
        """
        current = self.password
        password = current.get_secret_value() if current is not None else new_db_password()
        write_secret(self.password_file, password)
        return password

    @contextlib.contextmanager
    def _initdb_password_file(self, password: str) -> Iterator[Path]:
        """Yield a file holding ``password`` for initdb (0600, the server user's); removed after.

        It lies beside the data folder, which the server user can reach (checked before).
        """
        path = self.data_dir.parent / f".{self.data_dir.name}.initdb-password"
        try:
            write_secret(path, password)
            self._give_to_server_user(path)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _write_hba(self) -> None:
        path = self.data_dir / HBA_FILE
        path.write_text("\n".join(HBA_LINES) + "\n", encoding="utf-8")
        self._give_to_server_user(path)

    def trusts_connections(self) -> bool:
        """Return whether pg_hba.conf lets a connection in without a password (``trust``)."""
        text = (self.data_dir / HBA_FILE).read_text(encoding="utf-8")
        # TYPE DATABASE USER [ADDRESS [MASK]] METHOD [OPTIONS]: the method is past the third.
        return any("trust" in line.split("#", 1)[0].split()[3:] for line in text.splitlines())

    def _require_passwords(self) -> None:
        """Upgrade a running cluster made with trust authentication (an earlier parksense).

        Over the still-trusted connection: give the superuser its password (as a SCRAM
        verifier computed here, so the password itself never reaches the server or its
        log), rewrite pg_hba.conf, reload, and wait until a wrong password is refused.
        Idempotent: a cluster that trusts no connection is left alone.

        Raises:
            StackError: The reloaded cluster still accepts a wrong password.
        """
        if not self.trusts_connections():
            return
        logger.info(
            "Upgrading the PostgreSQL cluster in %s from trust to password authentication"
            " (the password is in %s)",
            self.data_dir,
            self.password_file,
        )
        password = self._settle_password()
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), self.superuser.encode(), AUTH_METHOD.encode()
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(self.superuser), sql.Literal(verifier.decode())
                )
            )
            self._write_hba()
            conn.execute("SELECT pg_reload_conf()")
        if not wait_until(self.refuses_wrong_password, HBA_RELOAD_TIMEOUT_S):
            raise StackError(
                f"PostgreSQL in {self.data_dir} still accepts connections without the password"
                f" after its {HBA_FILE} was rewritten; see {self.log_file}"
            )

    def refuses_wrong_password(self) -> bool:
        """Return whether the running server refuses the superuser with a wrong password.

        Raises:
            psycopg.OperationalError: The server could not be reached at all.
        """
        wrong = make_conninfo(self.conninfo(), password=f"wrong-{new_db_password()}")
        try:
            with psycopg.connect(wrong, connect_timeout=CONNECT_TIMEOUT_S):
                return False
        except psycopg.OperationalError as exc:
            if _REFUSED_PASSWORD_SIGN in str(exc):
                return True
            raise

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None when the cluster is not running."""
        pid = read_pid_file(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return None
        cmdline = read_cmdline(pid) or []
        if not cmdline or "postgres" not in Path(cmdline[0]).name:
            return None  # A stale lock file whose pid now belongs to another program.
        return pid

    def is_running(self) -> bool:
        """Return whether this cluster's postmaster is alive."""
        return self.pid is not None

    def start(self) -> None:
        """Initialise the cluster if needed and start it; return once it accepts connections.

        A cluster made by an earlier parksense with trust authentication (running or not)
        is upgraded to password authentication here.

        Raises:
            MissingComponentError: PostgreSQL or TimescaleDB is not installed.
            ServiceStartError: The port is taken, or the server did not start.
            StackError: A cluster made with trust authentication could not be upgraded.
        """
        self.init()
        if not self.is_running():
            self._start_server()
        self._require_passwords()

    def _start_server(self) -> None:
        ensure_port_free(
            self.host,
            self.port,
            "PostgreSQL",
            "stop it, or choose another port with PARKSENSE_DB_PORT",
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self._give_to_server_user(self.log_file)
        self._check_reachable(self.log_file)
        logger.info("Starting PostgreSQL on %s:%d (data %s)", self.host, self.port, self.data_dir)
        self._wait_for_previous_server()
        deadline = time.monotonic() + STALE_SERVER_TIMEOUT_S
        while True:
            result = self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "--pgdata",
                    str(self.data_dir),
                    "--log",
                    str(self.log_file),
                    "--wait",
                    "--timeout",
                    str(PG_CTL_TIMEOUT_S),
                    "start",
                ],
                check=False,
            )
            if result.returncode == 0:
                return
            tail = self._log_tail() or (result.stderr or result.stdout).strip()
            leftovers = any(sign in tail for sign in _PREVIOUS_SERVER_SIGNS)
            if not leftovers or time.monotonic() >= deadline:
                raise ServiceStartError("PostgreSQL", f"did not start: {tail}", self.log_file)
            time.sleep(0.2)

    def _wait_for_previous_server(self) -> None:
        """Wait for the remains of a killed server, which PostgreSQL refuses to start beside.

        A postmaster killed with SIGKILL stays a zombie until init reaps it, and its backends
        exit only once they notice; meanwhile its lock file looks alive.
        """
        pid = read_pid_file(self.data_dir / "postmaster.pid")
        if pid is not None:
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), STALE_SERVER_TIMEOUT_S)

    def _log_tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return ""

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server (``pg_ctl stop -m mode``: smart, fast or immediate).

        Returns:
            True if a running server was stopped.

        Raises:
            StackError: pg_ctl could not stop it.
        """
        if not self.is_running():
            return False
        logger.info("Stopping PostgreSQL on port %d (%s)", self.port, mode)
        result = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "--pgdata",
                str(self.data_dir),
                "--mode",
                mode,
                "--wait",
                "--timeout",
                str(PG_CTL_TIMEOUT_S),
                "stop",
            ],
            check=False,
        )
        if result.returncode != 0 and self.is_running():
            raise StackError(f"pg_ctl stop failed: {(result.stderr or result.stdout).strip()}")
        return True

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (if running) and start it again."""
        self.stop(mode)
        self.start()

    # -- databases --------------------------------------------------------------------

    def database_settings(self, dbname: str = "postgres") -> DatabaseSettings:
        """Return the settings of database ``dbname`` as the superuser, with its password."""
        return DatabaseSettings(
            host=self.host, port=self.port, name=dbname, user=self.superuser, password=self.password
        )

    def conninfo(self, dbname: str = "postgres") -> str:
        """Return a libpq connection string for ``dbname`` as the superuser, with its password."""
        return self.database_settings(dbname).conninfo(application_name="parksense-stack")

    def ensure_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists.

        Returns:
            True if it was created.
        """
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is not None:
                return False
            logger.info("Creating database %s", name)
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                return False  # Created meanwhile by another process: what we wanted.
            return True
