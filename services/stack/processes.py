"""Background processes of the local stack: pid files, liveness, readiness and stopping."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from services.stack.errors import ServiceStartError

logger = logging.getLogger(__name__)

# How often readiness and exit are polled: short enough that `up` returns promptly,
# long enough not to spin.
POLL_INTERVAL_S = 0.05
# A service gets this long to exit after SIGTERM (it flushes and acknowledges) before SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 20.0

# Processes this interpreter started and has not reaped yet. Keeping the Popen objects
# alive lets `stop` reap its own children (no zombies) and keeps Popen.__del__ from
# warning about a child that is meant to outlive the object.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def read_cmdline(pid: int) -> list[str] | None:
    """Return the argument vector of a live process, or None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # Zombies and kernel threads have an empty command line.
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def pid_alive(pid: int) -> bool:
    """Return whether ``pid`` is a running process (not a zombie).

    Children started by ``spawn`` are polled (which reaps them once they exit); for other
    processes the state comes from ``/proc/PID/stat``, not the command line, which reads
    empty for a moment while a fresh child calls exec.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    # Fields after the parenthesised command name; the first is the state letter.
    state = stat.rpartition(")")[2].split()[:1]
    return bool(state) and state[0] not in {"Z", "X"}


def read_pid_file(path: Path) -> int | None:
    """Return the pid stored in ``path`` (its first line), or None when absent or unreadable."""
    try:
        first = path.read_text(encoding="ascii").split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() else None


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    *,
    interval_s: float = POLL_INTERVAL_S,
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def terminate(pid: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop one process: SIGTERM, then SIGKILL when it outlives ``timeout_s``.

    Returns:
        True if the process exited on SIGTERM, False if it had to be killed.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_alive(pid)  # Reap it if it was our child.
        return True
    if wait_until(lambda: not pid_alive(pid), timeout_s):
        return True
    logger.warning("Process %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5.0)
    return False


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session with output appended to ``log_file``; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            # Its own session: Ctrl-C in the terminal that ran `parksense up` must not
            # reach the services, which outlive the command.
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    return child.pid


class ManagedProcess:
    """One background service known by its pid file and its command line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        pid_file: Path,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        match: Sequence[str] | None = None,
    ) -> None:
        """Describe the service.

        Args:
            name: Name shown to the user (``api``, ``ingest-1``).
            argv: Command line to start it.
            pid_file: Where its pid is kept between ``parksense`` commands.
            log_file: Where its stdout and stderr go.
            env: Its environment (the caller's when None).
            cwd: Its working directory.
            match: The arguments after the interpreter or binary that identify it in
                ``/proc``: a pid file pointing at a process whose command line does not
                continue with them is stale. Defaults to ``argv[1:]``; the program's own
                path is not compared, since it may differ between runs (``python`` vs
                ``python3`` of one virtualenv).
        """
        self.name = name
        self.argv = list(argv)
        self.pid_file = pid_file
        self.log_file = log_file
        self.env = env
        self.cwd = cwd
        self.match = list(match) if match is not None else self.argv[1:]

    def _matches(self, cmdline: list[str]) -> bool:
        return cmdline[1 : 1 + len(self.match)] == self.match

    @property
    def pid(self) -> int | None:
        """The pid of the running service, or None when it is not running."""
        pid = read_pid_file(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        cmdline = read_cmdline(pid)
        if cmdline is None or not self._matches(cmdline):
            return None
        return pid

    def is_running(self) -> bool:
        """Return whether the process named by the pid file is alive and is this service."""
        return self.pid is not None

    def start(self) -> int:
        """Start the service (whatever its pid file says) and write its pid file."""
        pid = spawn(self.argv, log_file=self.log_file, env=self.env, cwd=self.cwd)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n", encoding="ascii")
        tmp.replace(self.pid_file)
        logger.info("Started %s (pid %d), log %s", self.name, pid, self.log_file)
        return pid

    def wait_ready(self, pid: int, ready: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``ready()`` holds while the process stays alive.

        Raises:
            ServiceStartError: The process exited, or was not ready by the deadline.
        """
        died = False

        def check() -> bool:
            nonlocal died
            if ready():
                return True
            died = not pid_alive(pid)
            return died

        if wait_until(check, timeout_s) and not died:
            return
        if died:
            raise ServiceStartError(self.name, "exited during start-up", self.log_file)
        raise ServiceStartError(self.name, f"was not ready after {timeout_s:.0f} s", self.log_file)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the service if it runs and remove its pid file.

        Returns:
            True if a running process was stopped.
        """
        pid = self.pid
        if pid is not None:
            logger.info("Stopping %s (pid %d)", self.name, pid)
            terminate(pid, timeout_s)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return pid is not None


def ensure_port_free(host: str, port: int, service: str, hint: str) -> None:
    """Refuse to start ``service`` on a port another program already listens on.

    Args:
        host: Address the service is to listen on.
        port: Its port.
        service: Its name, for the message.
        hint: What the user can do, e.g. the setting that moves the port.

    Raises:
        ServiceStartError: Something else accepts connections on ``host:port``.
    """
    if port_open(host, port):
        raise ServiceStartError(
            service, f"cannot start: {host}:{port} is already in use by another program ({hint})"
        )
