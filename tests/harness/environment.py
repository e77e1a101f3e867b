"""The tests' environment: free TCP ports and folders for real services, platform credentials."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from pydantic import SecretStr

from services.config import MqttSettings
from services.core.access import CredentialKind, PlatformRole, client_id, username

# Ports of the local stack a developer may be running; tests never use them.
RESERVED_PORTS = frozenset({1883, 5433, 8000})
# Settings of throwaway test clusters: a crash of the test machine may lose them, so skip
# the fsyncs (a killed postgres process still loses nothing). Small buffers: several
# clusters may run at once.
# The in-process test client talks to the API as a local browser would: the API refuses
# Host headers it does not trust, and "testserver" is not one of them.
LOCAL_URL = "http://127.0.0.1"
TEST_CLUSTER_SETTINGS: dict[str, str | int] = {"fsync": "off", "shared_buffers": "128MB"}


# Passwords of the platform credentials the session's broker knows (set by its fixture).
PLATFORM_PASSWORDS: dict[PlatformRole, str] = {}


def platform_mqtt(settings: MqttSettings, role: PlatformRole) -> MqttSettings:
    """Return ``settings`` with the credential of platform ``role``."""
    return settings.model_copy(
        update={
            "username": username(CredentialKind.PLATFORM, role.value),
            "password": SecretStr(PLATFORM_PASSWORDS[role]),
        }
    )


def mqtt_client_id(settings: MqttSettings, name: str) -> str:
    """Return a client id under the prefix of the credential in ``settings``."""
    assert settings.username is not None, "test clients always connect with a credential"
    return client_id(settings.username, name)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def make_temp_dir(prefix: str) -> Path:
    """Return a new temporary folder the ``postgres`` system user can traverse.

    As root, PostgreSQL runs as ``postgres``, which must reach its data folder through
    every parent; ``mkdtemp`` makes folders only their owner can enter.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def free_port_pair() -> int:
    """Return a port p such that p and p + 1 can both be bound (workers 1 and 2 metrics)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
