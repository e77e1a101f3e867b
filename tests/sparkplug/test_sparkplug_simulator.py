"""``parksense sim run --protocol sparkplug``: the simulator's edge nodes through ingest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from services.config import MqttSettings
from simulators.__main__ import main
from tests.harness.ingest import IngestProcess
from tests.harness.sparkplug import TIMEOUT_S, EdgeSite, latest, refusals
from tests.harness.waiting import wait_until


def stored(conninfo: str, device_id: str) -> int:
    """How many readings of ``device_id`` are stored."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE device_id = %s", (device_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_simulator_speaks_sparkplug_and_its_readings_are_stored(
    site: EdgeSite,
    api: TestClient,
    workers: Callable[[int], list[IngestProcess]],
    mqtt_settings: MqttSettings,
    db_conninfo: str,
    tmp_path: Path,
) -> None:
    """Births, alias-only data and deaths from the simulator: readings, no dead letter."""
    workers(1)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(site.fleet_yaml(), encoding="utf-8")
    assert mqtt_settings.password is not None
    argv = [
        "run",
        "--fleet", str(fleet),
        "--host", mqtt_settings.host,
        "--port", str(mqtt_settings.port),
        "--username", str(mqtt_settings.username),
        "--password", mqtt_settings.password.get_secret_value(),
        "--protocol", "sparkplug",
        "--interval-s", "0.5",
        "--duration-s", "3",
        "--client-id-prefix", f"{mqtt_settings.username}.{site.prefix}-",
    ]  # fmt: skip
    assert main(argv) == 0
    for device in (site.meter, site.line):
        wait_until(lambda d=device: stored(db_conninfo, d) >= 3 * 2, TIMEOUT_S)  # type: ignore[misc]
    # The simulator's clean stop publishes each device's DDEATH.
    wait_until(lambda: latest(api, site.meter)["status_reason"] == "death", TIMEOUT_S)
    assert latest(api, site.line)["metrics"]["state"]["value"] in {
        "running",
        "idle",
        "fault",
        "stopped",
    }
    assert refusals(db_conninfo, site) == []
