"""The tuned peer of ``bench-peers``: mq-bridge 1.2.0 in its own venv, MQTT in, PostgreSQL out.

Its configuration follows issue 10: MQTT 5 input with a persistent session,
``max_inflight`` 1000, ``queue_capacity`` 2000, keep-alive 120 s, batches of 512, a
``transform`` flattening ``metrics.*``, and an sqlx output inserting one wide row per
message into a hypertable without a unique key (1-day chunks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

PEER_PACKAGE = "mq-bridge"
PEER_VERSION = "1.2.0"
PEER_TABLE = "peer_readings"
PEER_ROUTE = "peer"
PIP_TIMEOUT_S = 600.0
COLUMNS = ("power_kw", "energy_kwh", "state", "temp_c", "output_units")

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {PEER_TABLE} (
    ts            timestamptz NOT NULL,
    topic         text NOT NULL,
    seq           bigint,
    power_kw      double precision,
    energy_kwh    double precision,
    state         text,
    temp_c        double precision,
    output_units  double precision
);
SELECT create_hypertable('{PEER_TABLE}', 'ts', chunk_time_interval => interval '1 day',
                         if_not_exists => true);
"""

INSERT_QUERY = (
    f"INSERT INTO {PEER_TABLE} (ts, topic, seq, power_kw, energy_kwh, state, temp_c,"
    " output_units) VALUES (to_timestamp(${payload:ts}::float8 / 1000), ${payload:topic},"
    " ${payload:seq}, ${payload:power_kw}, ${payload:energy_kwh}, ${payload:state},"
    " ${payload:temp_c}, ${payload:output_units})"
)

# Runs inside the peer's venv: load the route and block until SIGTERM ends the process.
RUNNER = """\
import json, sys
from mq_bridge import Route
with open(sys.argv[1], encoding="utf-8") as handle:
    config = json.load(handle)
Route.from_config(config, sys.argv[2]).run()
"""


class PeerError(Exception):
    """The peer cannot be installed or configured; the message says why."""


def peer_python(venv: Path) -> Path:
    """Return the interpreter of the peer's venv."""
    return venv / "bin" / "python"


def installed_version(venv: Path) -> str | None:
    """Return the mq-bridge version installed in ``venv``, if any."""
    python = peer_python(venv)
    if not python.exists():
        return None
    result = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mq-bridge'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def ensure_installed(venv: Path) -> str:
    """Install mq-bridge 1.2.0 into its own venv unless it is there; return its version.

    Raises:
        PeerError: The venv or the install failed.
    """
    if installed_version(venv) == PEER_VERSION:
        return PEER_VERSION
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                str(peer_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                PEER_PACKAGE + "==" + PEER_VERSION,
            ],
            check=True,
            timeout=PIP_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerError(f"cannot install {PEER_PACKAGE} {PEER_VERSION} into {venv}: {exc}") from exc
    version = installed_version(venv)
    if version != PEER_VERSION:
        raise PeerError(f"{venv} holds {PEER_PACKAGE} {version}, not {PEER_VERSION}")
    return version


def create_table(conn: psycopg.Connection) -> None:
    """Create the peer's wide hypertable (if missing) and empty it."""
    conn.execute(CREATE_TABLE)
    conn.execute(f"TRUNCATE {PEER_TABLE}")


def route_config(
    *,
    mqtt_url: str,
    topic: str,
    username: str,
    password: str,
    client_id: str,
    db_url: str,
) -> dict[str, object]:
    """Return the peer's route document (``routes: {peer: …}``) as issue 10 tunes it."""
    mapping = {"ts": "$.ts", "topic": "$.topic", "seq": "$.seq"}
    mapping |= {name: f"$.metrics.{name}" for name in COLUMNS}
    return {
        "routes": {
            PEER_ROUTE: {
                "batch_size": 512,
                "input": {
                    "mqtt": {
                        "url": mqtt_url,
                        "topic": topic,
                        "username": username,
                        "password": password,
                        "client_id": client_id,
                        "protocol": "v5",
                        "qos": 1,
                        "clean_session": False,
                        "session_expiry_interval": 3600,
                        "max_inflight": 1000,
                        "queue_capacity": 2000,
                        "keep_alive_seconds": 120,
                    },
                    "middlewares": [{"transform": {"mapping": mapping}}],
                },
                "output": {
                    "sqlx": {"url": db_url, "table": PEER_TABLE, "insert_query": INSERT_QUERY}
                },
            }
        }
    }


def write_runner(folder: Path, config: dict[str, object]) -> list[str]:
    """Write the runner and its config (mode 0600: it holds passwords); return the argv tail."""
    folder.mkdir(parents=True, exist_ok=True)
    runner = folder / "run_peer.py"
    runner.write_text(RUNNER, encoding="utf-8")
    config_file = folder / "peer-route.json"
    fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    return [str(runner), str(config_file), PEER_ROUTE]
