"""A fleet load is in force when it returns: readings published right after are judged by it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from fastapi.testclient import TestClient

from schemas.fleet import parse_fleet
from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings, MqttSettings
from services.storage.fleet_store import load_fleet
from tests.harness.ingest import (
    IngestProcess,
    Publisher,
    Row,
    count_rows,
    dead_letter_reasons,
    scrape,
    stored_rows,
    unique_prefix,
)
from tests.harness.waiting import wait_until

ITERATIONS = 30
# Two messages per load: a shared subscription hands them to the two workers in turn.
MESSAGES_PER_LOAD = 2
# The registry poll is switched off, so only the check made at flush time can help.
NO_POLL = {"PARKSENSE_INGEST_REGISTRY_REFRESH_S": "3600"}


@dataclass
class EvolvingFleet:
    """A park of two factories whose devices appear, move and change type between loads."""

    prefix: str
    devices: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (factory, type)

    @property
    def park(self) -> str:
        """The park id."""
        return f"{self.prefix}-park"

    def factory(self, n: int) -> str:
        """The id of factory ``n`` (1 or 2)."""
        return f"{self.prefix}-f{n}"

    def yaml(self) -> str:
        """The fleet file as it stands."""
        lines = ["parks:", f"  - id: {self.park}", "    factories:"]
        for n in (1, 2):
            lines += [f"      - id: {self.factory(n)}", "        devices:"]
            mine = [(d, t) for d, (f, t) in self.devices.items() if f == self.factory(n)]
            lines += [f"          - {{id: {d}, type: {t}}}" for d, t in mine] or ["          []"]
        return "\n".join(lines) + "\n"

    def change(self, step: int) -> tuple[str, str]:
        """Make step ``step``'s change; return the device and the metric only it allows now.

        Step 3k registers a new device, 3k+1 moves it to the other factory (its old topic
        is now a ``topic_mismatch``), 3k+2 makes it a power meter (``power_kw`` was an
        ``unknown_metric``).
        """
        device = f"{self.prefix}-d{step // 3:02d}"
        if step % 3 == 0:
            self.devices[device] = (self.factory(1), "env_sensor")
            return device, "temp_c"
        if step % 3 == 1:
            self.devices[device] = (self.factory(2), "env_sensor")
            return device, "humidity_pct"
        self.devices[device] = (self.factory(2), "power_meter")
        return device, "power_kw"

    def topic(self, device: str) -> str:
        """The device's telemetry topic under its current factory."""
        return f"parksense/v1/{self.park}/{self.devices[device][0]}/{device}/telemetry"


def test_readings_right_after_each_fleet_load_are_judged_against_it(
    clean_db: str,
    db_settings: DatabaseSettings,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """30 loads in a row, each followed at once by readings only it allows: all stored."""
    fleet = EvolvingFleet(unique_prefix())
    load_fleet(clean_db, parse_fleet(fleet.yaml()))
    group = f"g-{fleet.prefix}"
    workers = [ingest_factory(share_group=group, extra_env=NO_POLL) for _ in range(2)]
    for worker in workers:
        worker.start()
    publisher = Publisher(mqtt_settings)
    api_settings = ApiSettings()
    start = datetime.now(UTC) - timedelta(minutes=1)
    expected: set[Row] = set()
    try:
        with TestClient(create_app(api_settings, db_settings), base_url="http://localhost") as api:
            for step in range(ITERATIONS):
                device, metric = fleet.change(step)
                # Both ways of loading a fleet: the HTTP API and what `parksense fleet load` calls.
                if step % 2 == 0:
                    answer = api.put(
                        "/v1/fleet",
                        content=fleet.yaml(),
                        headers={"content-type": "application/yaml"},
                    )
                    assert answer.status_code == 200, answer.text
                else:
                    load_fleet(clean_db, parse_fleet(fleet.yaml()))
                for k in range(MESSAGES_PER_LOAD):
                    ts = start + timedelta(seconds=step, milliseconds=k)
                    value = float(step % 50)
                    sample = {"ts": ts.isoformat(), "metrics": {metric: value}}
                    publisher.client.publish(fleet.topic(device), orjson.dumps(sample), qos=1)
                    expected.add((device, metric, ts, value))
                wait_until(
                    lambda: (
                        count_rows(clean_db, fleet.prefix) >= len(expected)
                        or dead_letter_reasons(clean_db, fleet.prefix)
                    ),
                    30,
                    interval_s=0.02,
                    message=f"step {step}: the readings were neither stored nor refused",
                )
                assert dead_letter_reasons(clean_db, fleet.prefix) == [], f"step {step}"
    finally:
        publisher.close()
    assert stored_rows(clean_db, fleet.prefix) == expected
    # Both workers met a registry that moved under their batch, and judged it again.
    for worker in workers:
        assert scrape(worker.metrics_port)["parksense_ingest_messages_rejudged_total"] > 0
