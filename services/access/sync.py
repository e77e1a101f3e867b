"""Bring a file-based broker (Mosquitto) in line with the credentials in PostgreSQL.

A sync renders the ``mqtt_users`` and ``mqtt_acl`` views into the broker's password, ACL
and subscription files, swaps them in atomically, sends the broker SIGHUP and returns once
the broker has loaded them. Mosquitto 2.0 re-checks every connected client on reload, so a
rotated or revoked credential's connection is dropped by then.

Knowing that the reload happened: each sync also renders a one-off probe credential
(``parksense.sync``, a fresh random password that is never stored) and connects with it
until the broker accepts it; the files are loaded in one reload, so the rest is in force.

Syncs from several processes (API workers, the CLI) run one at a time under a PostgreSQL
advisory lock, each rendering the latest committed state.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from services.access.errors import BrokerReloadError
from services.config import BrokerAuthSettings, MqttSettings
from services.core.access import (
    SYNC_PROBE_USERNAME,
    BrokerFiles,
    BrokerUser,
    client_id,
    hash_password,
    mosquitto_hash,
    render_broker_files,
)
from services.storage.credentials import broker_users, new_salt

logger = logging.getLogger(__name__)

PASSWORD_FILE = "passwords"  # noqa: S105 - a file name, not a password
ACL_FILE = "acl"
SUBSCRIPTIONS_FILE = "subscriptions"
# Serialises syncs across processes (an arbitrary constant of this project).
_SYNC_LOCK_KEY = 0x70_61_72_6B_61_63_6C  # "parkacl"
# Between probe connections while the broker reloads (it checks its reload flag about
# every 100 ms).
_PROBE_INTERVAL_S = 0.02
_PROBE_CONNECT_TIMEOUT_S = 2.0


def auth_file_paths(auth_dir: Path) -> tuple[Path, Path, Path]:
    """Return the password, ACL and subscription-grant files in ``auth_dir``."""
    return auth_dir / PASSWORD_FILE, auth_dir / ACL_FILE, auth_dir / SUBSCRIPTIONS_FILE


def write_broker_files(auth_dir: Path, files: BrokerFiles) -> None:
    """Write the files readable by their owner only, each swapped in by an atomic rename."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    for path, text in zip(
        auth_file_paths(auth_dir), (files.passwords, files.acl, files.subscriptions), strict=True
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.replace(path)


class BrokerSync:
    """Renders the credentials for one broker and reloads it."""

    def __init__(self, settings: BrokerAuthSettings, mqtt_settings: MqttSettings) -> None:
        """Describe the broker; nothing happens until ``sync``."""
        self._settings = settings
        self._mqtt = mqtt_settings

    @property
    def enabled(self) -> bool:
        """Whether this broker reads files (else it reads the database itself)."""
        return self._settings.auth_dir is not None

    def sync(self, conninfo: str) -> None:
        """Render the committed credentials and, if the broker runs, reload it.

        Raises:
            BrokerReloadError: The broker did not confirm the reload in time.
        """
        auth_dir = self._settings.auth_dir
        if auth_dir is None:
            return
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SYNC_LOCK_KEY,))
            try:
                users = broker_users(conn)
                probe_password = secrets.token_urlsafe(24)
                probe_salt = new_salt()
                # One iteration: the probe password is random and lives for one sync.
                probe = BrokerUser(
                    SYNC_PROBE_USERNAME,
                    mosquitto_hash(probe_salt, hash_password(probe_password, probe_salt, 1), 1),
                )
                write_broker_files(auth_dir, render_broker_files([*users, probe]))
                pid = self._broker_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGHUP)
                    self._wait_for_reload(probe_password)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SYNC_LOCK_KEY,))
        logger.info("Broker credentials synced: %d credentials", len(users))

    def _broker_pid(self) -> int | None:
        pid_file = self._settings.pid_file
        if pid_file is None:
            return None
        try:
            pid = int(pid_file.read_text(encoding="utf-8").strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _wait_for_reload(self, probe_password: str) -> None:
        deadline = time.monotonic() + self._settings.reload_timeout_s
        while not self._probe(probe_password):
            if time.monotonic() > deadline:
                raise BrokerReloadError(self._settings.reload_timeout_s)
            time.sleep(_PROBE_INTERVAL_S)

    def _probe(self, password: str) -> bool:
        """Return whether the broker accepts the probe credential of this sync."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id(SYNC_PROBE_USERNAME, str(os.getpid())),
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(SYNC_PROBE_USERNAME, password)
        accepted: list[bool] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: accepted.append(not reason.is_failure)
        try:
            client.connect(self._mqtt.host, self._mqtt.port, keepalive=10)
        except OSError:
            return False
        deadline = time.monotonic() + _PROBE_CONNECT_TIMEOUT_S
        while not accepted and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        client.disconnect()
        return bool(accepted and accepted[0])
