"""Live-stack harness: the API as a real process, a small park with lines, and an SSE reader.

Used by the browser tests and the stream tests: devices publish over MQTT, a real ingest
process writes TimescaleDB, and the API (a real uvicorn process) reads it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from schemas.fleet import parse_fleet
from services.config import DatabaseSettings, MqttSettings
from services.stack.stack import settings_env
from services.storage.fleet_store import load_fleet
from tests.harness.environment import free_port
from tests.harness.ingest import REPO, IngestProcess, Publisher, unique_prefix
from tests.harness.waiting import wait_until

# How long a waiting test gives the whole path (MQTT → ingest → database → poll → client).
LIVE_TIMEOUT_S = 20.0


@dataclass
class LivePark:
    """A park of two factories with one production line each, a meter, a machine and a sensor.

    Factory ``f1`` has line ``l1``, meter ``meter`` and machine ``mach``; factory ``f2`` has
    line ``l2`` and environment sensor ``env``. Every id starts with ``prefix``.
    """

    prefix: str
    park: str = field(init=False)

    def __post_init__(self) -> None:
        """Derive the park id."""
        self.park = f"{self.prefix}-park"

    def factory(self, short: str) -> str:
        """A factory id: ``f1`` or ``f2``."""
        return f"{self.prefix}-{short}"

    def device(self, short: str) -> str:
        """A device id: ``l1``, ``meter``, ``mach``, ``l2`` or ``env``."""
        return f"{self.prefix}-{short}"

    def factory_of(self, short: str) -> str:
        """The factory id of a device."""
        return self.factory("f2" if short in {"l2", "env"} else "f1")

    def yaml(self) -> str:
        """The fleet file."""
        p = self.prefix
        return f"""
parks:
  - id: {self.park}
    name: Riverside Test Park
    city: Testville
    factories:
      - id: {p}-f1
        name: Alpha Precision
        industry: electronics
        devices:
          - {{id: {p}-l1, type: production_line, capacity_units_per_hour: 600}}
          - {{id: {p}-meter, type: power_meter}}
          - {{id: {p}-mach, type: machine}}
      - id: {p}-f2
        name: Beta Foods
        industry: food
        devices:
          - {{id: {p}-l2, type: production_line, capacity_units_per_hour: 600}}
          - {{id: {p}-env, type: env_sensor}}
"""

    def load(self, conninfo: str) -> int:
        """Load the fleet; return its version."""
        return load_fleet(conninfo, parse_fleet(self.yaml())).version

    def topic(self, short: str, channel: str = "telemetry") -> str:
        """The MQTT topic of a device."""
        return f"parksense/v1/{self.park}/{self.factory_of(short)}/{self.device(short)}/{channel}"


def now_ts() -> str:
    """Now as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send(publisher: Publisher, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish JSON messages at QoS 1 and wait until the broker acknowledged them."""
    infos = publisher.publish_all([(topic, orjson.dumps(body)) for topic, body in messages])
    wait_until(lambda: all(i.is_published() for i in infos), 10, message="broker did not ack")


def sample(metrics: dict[str, float | str], ts: str | None = None) -> dict[str, Any]:
    """One telemetry sample."""
    return {"ts": ts or now_ts(), "metrics": metrics}


def baseline(park: LivePark, *, l2_state: str = "idle") -> list[tuple[str, dict[str, Any]]]:
    """Every device reporting: l1 running, l2 in ``l2_state``, nothing in alarm."""
    earlier = (datetime.now(UTC) - timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    return [
        (park.topic("l1"), sample({"output_units": 1000}, earlier)),
        (park.topic("l2"), sample({"output_units": 500}, earlier)),
        (park.topic("meter"), sample({"energy_kwh": 10_000}, earlier)),
        (park.topic("l1"), sample({"state": "running", "output_units": 1006, "speed_upm": 6})),
        (park.topic("l2"), sample({"state": l2_state, "output_units": 500, "speed_upm": 0})),
        (park.topic("meter"), sample({"power_kw": 182.5, "energy_kwh": 10_003})),
        (park.topic("mach"), sample({"state": "running", "vibration_mm_s": 2.1, "temp_c": 41})),
        (park.topic("env"), sample({"temp_c": 22.5, "humidity_pct": 45, "pm25_ugm3": 12})),
    ]


class ApiServer:
    """``python -m services.api`` as a real child process on a free port."""

    def __init__(
        self,
        db: DatabaseSettings,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        """Prepare (not start) the API; ``log_level`` info also writes the access log."""
        self.log_level = log_level
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = log_dir / f"api-{self.port}.log"
        self.env = {
            **os.environ,
            **settings_env(db),
            "PARKSENSE_API_HOST": self.host,
            "PARKSENSE_API_PORT": str(self.port),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://{self.host}:{self.port}"

    def _healthy(self) -> bool:
        try:
            status, _ = self.get("/healthz")
        except OSError:
            return False
        return status == 200

    def start(self) -> None:
        """Start the API and wait until it answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.api", "--log-level", self.log_level],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process
        wait_until(
            lambda: process.poll() is not None or self._healthy(),
            30,
            interval_s=0.1,
            message=f"the API did not start; see {self.log_path}",
        )
        assert process.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """GET a path; return the status and the decoded JSON body (or the text)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return response.status, raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event as a client parses it."""

    event: str
    data: str
    id: str | None
    retry: int | None
    # A message without a data field sets the id or the retry but dispatches no event.
    dispatch: bool = True

    def json(self) -> Any:
        """The data, decoded."""
        return orjson.loads(self.data)


class SseClient:
    """Follows an SSE stream over a real socket; a thread parses events into a queue."""

    def __init__(
        self, host: str, port: int, path: str, headers: dict[str, str] | None = None
    ) -> None:
        """Connect and start reading; the response status is in ``status``."""
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("content-type", "")
        self.events: queue.Queue[SseEvent | None] = queue.Queue()
        self.seen: list[SseEvent] = []
        self.retry: int | None = None
        self.last_id: str | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()
        else:
            self.body = self.response.read()
            self.conn.close()

    def _read(self) -> None:
        fields: dict[str, list[str]] = {}
        try:
            for raw in iter(self.response.fp.readline, b""):
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))
                    continue
                if fields:
                    self.events.put(self._event(fields))
                fields = {}
        except (OSError, ValueError, AttributeError):
            pass  # closed by close(), or by the server
        finally:
            self.events.put(None)

    def _event(self, fields: dict[str, list[str]]) -> SseEvent:
        retry = fields.get("retry")
        ident = fields.get("id")
        return SseEvent(
            event=fields.get("event", ["message"])[-1],
            data="\n".join(fields.get("data", [])),
            id=ident[-1] if ident else None,
            retry=int(retry[-1]) if retry else None,
            dispatch="data" in fields,
        )

    def stream(self, timeout_s: float = LIVE_TIMEOUT_S) -> Iterator[SseEvent]:
        """Yield events until ``timeout_s`` passes (AssertionError) or the stream ends."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout_s} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event is None:
                return
            if event.retry is not None:
                self.retry = event.retry
            if event.id is not None:
                self.last_id = event.id
            if event.dispatch:
                self.seen.append(event)
                yield event

    def wait_for(
        self,
        predicate: Callable[[SseEvent], bool],
        timeout_s: float = LIVE_TIMEOUT_S,
        message: str = "",
    ) -> SseEvent:
        """Return the first event that matches, reading the stream until the deadline."""
        for event in self.stream(timeout_s):
            if predicate(event):
                return event
        raise AssertionError(message or "the stream ended before a matching event")

    def ended(self, timeout_s: float = LIVE_TIMEOUT_S) -> bool:
        """Read until the stream ends; return True if it did before the deadline."""
        try:
            for _ in self.stream(timeout_s):
                pass
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        """Close the connection (the server sees the client go away)."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self._thread.join(5)


def device_alarm_state(conninfo: str, device_id: str) -> str | None:
    """The device's latest ``state`` as stored (None when it has none)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT value_text FROM device_latest WHERE device_id = %s AND metric = 'state'",
            (device_id,),
        ).fetchone()
    return None if row is None else str(row[0])


@dataclass
class LiveStack:
    """A loaded park reporting through a real ingest worker, and the API as a real process."""

    park: LivePark
    api: ApiServer
    publisher: Publisher
    conninfo: str
    # Headers that authenticate the harness's own requests (empty: the API is open).
    auth: dict[str, str] = field(default_factory=dict)

    def follow(self, headers: dict[str, str] | None = None) -> SseClient:
        """Open the park's stream."""
        return SseClient(
            self.api.host,
            self.api.port,
            f"/v1/parks/{self.park.park}/stream",
            {**self.auth, **(headers or {})},
        )

    def signals(self) -> dict[str, Any]:
        """GET the park's live signals."""
        status, body = self.api.get(f"/v1/parks/{self.park.park}/signals", self.auth)
        assert status == 200, body
        result: dict[str, Any] = body
        return result


@contextmanager
def live_stack(
    conninfo: str,
    db: DatabaseSettings,
    mqtt_settings: MqttSettings,
    log_dir: Path,
    *,
    admin_key: str | None = None,
    api_log_level: str = "warning",
    api_env: dict[str, str] | None = None,
) -> Iterator[LiveStack]:
    """Load a fresh park, start ingest and the API, and publish a baseline where all report.

    With ``admin_key``, the API runs with keys on (that key as its bootstrap admin key).
    """
    park = LivePark(unique_prefix())
    park.load(conninfo)
    worker = IngestProcess(db, mqtt_settings, log_dir)
    env = {"PARKSENSE_API_API_KEYS": admin_key} if admin_key else {}
    env.update(api_env or {})
    api = ApiServer(db, log_dir, env, log_level=api_log_level)
    publisher = Publisher(mqtt_settings)
    auth = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    stack = LiveStack(park, api, publisher, conninfo, auth)
    try:
        worker.start()
        api.start()
        send(publisher, baseline(park))
        wait_until(
            lambda: stack.signals()["counts"]["devices_online"] == 5,
            LIVE_TIMEOUT_S,
            interval_s=0.2,
            message="the baseline readings never made every device online",
        )
        yield stack
    finally:
        publisher.close()
        api.stop()
        worker.stop_and_forget_session()
