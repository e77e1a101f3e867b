"""A private Mosquitto broker with its own config, persistence and log in a state folder."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from services.access.sync import auth_file_paths, write_broker_files
from services.core.access import render_broker_files
from services.stack.broker_plugin import ensure_plugin
from services.stack.errors import MissingComponentError
from services.stack.processes import (
    DEFAULT_STOP_TIMEOUT_S,
    ManagedProcess,
    ensure_port_free,
    port_open,
    wait_until,
)

logger = logging.getLogger(__name__)

# Seconds the broker gets to open its listener (it loads its persistence file first).
START_TIMEOUT_S = 30.0
# Largest MQTT packet a client may send. The payload contract is 64 KiB; a bigger message
# must still reach ingest, which refuses it with the reason "oversize" instead of the broker
# dropping it unseen. Beyond this the broker disconnects the client (MQTT 5 reason 0x95).
MAX_PACKET_BYTES = 1024 * 1024
# Seconds between saves of the in-memory database. Mosquitto also saves on a clean exit
# (SIGTERM/SIGINT), so this bounds what a SIGKILL or power loss can take from the queues of
# persistent sessions. A full save each second is cheap at laptop scale.
AUTOSAVE_INTERVAL_S = 1
# A persistent session (ingest's included) outlives its client by this long.
PERSISTENT_CLIENT_EXPIRATION = "7d"


def find_mosquitto() -> Path:
    """Return the mosquitto binary (it lives in /usr/sbin, often not on a user's PATH).

    Raises:
        MissingComponentError: Mosquitto is not installed.
    """
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MissingComponentError("Mosquitto", "no mosquitto binary on PATH or in /usr/sbin")
    return Path(found)


def render_config(
    *,
    host: str,
    port: int,
    persistence_dir: Path,
    log_file: Path,
    auth_dir: Path,
    plugin: Path,
    as_root: bool,
) -> str:
    """Return the text of the broker's ``mosquitto.conf``."""
    password_file, acl_file, subscriptions_file = auth_file_paths(auth_dir)
    lines = [
        "# Written by parksense at every start; edits are overwritten.",
        f"listener {port} {host}",
        # Closed by default, as in production: every client needs a credential issued
        # from the registry, and may do only what the mqtt_acl view grants it
        # (docs/security.md). The files are rendered from PostgreSQL and reloaded with
        # SIGHUP by services/access/sync.py.
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        # Client ids under the credential's prefix, and refused subscriptions outside its
        # grants (the ACL file alone grants every SUBSCRIBE and filters delivery).
        f"plugin {plugin}",
        f"plugin_opt_subscriptions {subscriptions_file}",
        "persistence true",
        # The trailing slash matters: mosquitto appends the file name to this string.
        f"persistence_location {persistence_dir}/",
        "persistence_file mosquitto.db",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        # false: autosave_interval counts seconds, not changes.
        "autosave_on_changes false",
        # 0 is "no maximum" in mosquitto 2.0: a persistent session's queue is never cut,
        # since a dropped QoS 1 message would be a lost reading. Memory is the limit.
        "max_queued_messages 0",
        "max_queued_bytes 0",
        # MQTT 5 subscribers (ingest) set their own in-flight window with Receive Maximum;
        # max_inflight_messages keeps its default for MQTT 3.1.1 clients and publishers.
        f"max_packet_size {MAX_PACKET_BYTES}",
        f"persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}",
        "set_tcp_nodelay true",
        f"log_dest file {log_file}",
        "log_type error",
        "log_type warning",
        # Connections and disconnections are notices; "information" would add a line for
        # every autosave (each second or two).
        "log_type notice",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
    ]
    if as_root:
        # Started as root, mosquitto switches to the user "mosquitto" after reading this
        # file, and then could not open the log or persistence file in a root-owned state
        # folder. The broker only listens on the loopback address, so it stays root.
        lines.append("user root")
    return "\n".join(lines) + "\n"


class MosquittoBroker:
    """One Mosquitto process owned by parksense, with persistence in its state folder."""

    def __init__(
        self,
        state_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        log_file: Path | None = None,
        pid_file: Path | None = None,
    ) -> None:
        """Describe the broker; nothing is written or started yet.

        Args:
            state_dir: Holds its config and persistence database.
            port: TCP port of its only listener.
            host: Address of its only listener.
            log_file: Broker log; defaults to ``mosquitto.log`` in ``state_dir``.
            pid_file: Where its pid is kept; defaults to ``mosquitto.pid`` in ``state_dir``.
        """
        self.state_dir = state_dir.absolute()
        self.port = port
        self.host = host
        self.log_file = (log_file or self.state_dir / "mosquitto.log").absolute()
        self.pid_file = (pid_file or self.state_dir / "mosquitto.pid").absolute()
        self.config_file = self.state_dir / "mosquitto.conf"
        # Where the password, ACL and subscription files live (BrokerAuthSettings.auth_dir).
        self.auth_dir = self.state_dir / "auth"

    @property
    def persistence_file(self) -> Path:
        """The broker's saved database (sessions, queued and retained messages)."""
        return self.state_dir / "mosquitto.db"

    def _managed(self, binary: str = "mosquitto") -> ManagedProcess:
        # The command line tail (-c and our config) identifies the process; the binary's
        # path only matters when starting it.
        return ManagedProcess(
            "mosquitto",
            [binary, "-c", str(self.config_file)],
            pid_file=self.pid_file,
            log_file=self.log_file,
            match=["-c", str(self.config_file)],
        )

    @property
    def pid(self) -> int | None:
        """Pid of the running broker, or None when it is not running."""
        return self._managed().pid

    def is_running(self) -> bool:
        """Return whether this broker's process is alive."""
        return self.pid is not None

    def write_config(self) -> Path:
        """Write ``mosquitto.conf`` into the state folder and return its path.

        Until credentials are synced into ``auth_dir``, empty files let nobody in.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not auth_file_paths(self.auth_dir)[0].exists():
            write_broker_files(self.auth_dir, render_broker_files([]))
        self.config_file.write_text(
            render_config(
                host=self.host,
                port=self.port,
                persistence_dir=self.state_dir,
                log_file=self.log_file,
                auth_dir=self.auth_dir,
                plugin=ensure_plugin(self.state_dir / "plugin"),
                as_root=os.geteuid() == 0,
            ),
            encoding="utf-8",
        )
        return self.config_file

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the broker unless it runs; return once its port accepts connections.

        Raises:
            MissingComponentError: Mosquitto is not installed.
            ServiceStartError: The port is taken, or the broker did not come up.
        """
        process = self._managed(str(find_mosquitto()))
        if process.is_running():
            return
        ensure_port_free(
            self.host,
            self.port,
            "Mosquitto",
            "stop it, or choose another port with PARKSENSE_MQTT_PORT",
        )
        self.write_config()
        logger.info("Starting Mosquitto on %s:%d (state %s)", self.host, self.port, self.state_dir)
        pid = process.start()
        process.wait_ready(pid, lambda: port_open(self.host, self.port), timeout_s)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the broker with SIGTERM; it saves its database on the way out.

        Returns:
            True if a running broker was stopped.
        """
        process = self._managed()
        stopped = process.stop(timeout_s)
        # The listener closes a moment before the process is gone; wait for both so that
        # a restart can bind the port again.
        wait_until(lambda: not port_open(self.host, self.port), timeout_s)
        return stopped

    def restart(self) -> None:
        """Stop and start the broker; persistent sessions and queued messages survive."""
        self.stop()
        self.start()
