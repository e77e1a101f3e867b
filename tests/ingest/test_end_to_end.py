"""End to end: real MQTT publishers → ingest → TimescaleDB → API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings, MqttSettings
from tests.harness.environment import LOCAL_URL
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Publisher,
    count_rows,
    dead_letter_reasons,
    make_messages,
    publish_concurrently,
    stored_rows,
)
from tests.harness.waiting import wait_until


@pytest.fixture
def api(db_settings: DatabaseSettings) -> Iterator[TestClient]:
    """The API over the test database."""
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as client:
        yield client


def test_published_readings_are_stored_and_served(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
    api: TestClient,
) -> None:
    """Every published reading lands once and the API serves the latest value."""
    messages, expected = make_messages(fleet, readings=3000)
    publish_concurrently(mqtt_settings, messages, publishers=2)
    wait_until(lambda: count_rows(clean_db, fleet.prefix) >= len(expected), 30)
    assert stored_rows(clean_db, fleet.prefix) == expected

    device = fleet.device_ids[0]
    latest = api.get(f"/v1/devices/{device}/latest")
    assert latest.status_code == 200
    newest = max(row for row in expected if row[0] == device and row[1] == "temp_c")
    body = latest.json()
    assert body["metrics"]["temp_c"]["value"] == newest[3]
    assert datetime.fromisoformat(body["metrics"]["temp_c"]["ts"]) == newest[2]

    parks = api.get("/v1/parks").json()
    assert [p["park_id"] for p in parks["data"]] == [fleet.park]
    assert parks["data"][0]["devices"] == fleet.devices

    start = min(row[2] for row in expected)
    readings = api.get(
        f"/v1/devices/{device}/readings",
        params={
            "metric": "temp_c",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
        },
    ).json()
    assert [(datetime.fromisoformat(p["ts"]), p["value"]) for p in readings["points"]] == sorted(
        (ts, v) for d, m, ts, v in expected if d == device and m == "temp_c"
    )


def test_bad_input_is_dead_lettered_and_ingest_keeps_running(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
    api: TestClient,
) -> None:
    """A malformed message, an unknown device and a NaN value each get a reason; good data flows."""
    now = datetime.now(UTC).isoformat()
    device = fleet.device_ids[0]
    publisher = Publisher(mqtt_settings)
    infos = publisher.publish_all(
        [
            (fleet.topic(device), b"{not json"),
            (
                fleet.topic(f"{fleet.prefix}-ghost"),
                orjson.dumps({"ts": now, "metrics": {"temp_c": 1}}),
            ),
            (
                fleet.topic(device),
                f'{{"ts": "{now}", "metrics": {{"temp_c": NaN, "pm25_ugm3": 3}}}}'.encode(),
            ),
            (fleet.topic(device), orjson.dumps({"ts": now, "metrics": {"temp_c": 21.5}})),
        ]
    )
    wait_until(lambda: all(i.is_published() for i in infos), 10)
    publisher.close()
    wait_until(lambda: len(dead_letter_reasons(clean_db, fleet.prefix)) >= 3, 15)
    assert dead_letter_reasons(clean_db, fleet.prefix) == [
        "malformed_json",
        "unknown_device",
        "not_finite",
    ]
    wait_until(lambda: count_rows(clean_db, fleet.prefix) >= 2, 15)
    assert {(m, v) for _, m, _, v in stored_rows(clean_db, fleet.prefix)} == {
        ("pm25_ugm3", 3.0),
        ("temp_c", 21.5),
    }
    assert worker.process is not None
    assert worker.process.poll() is None

    letters = api.get("/v1/dead-letters", params={"reason": "not_finite"}).json()
    assert letters["count"] == 1
    assert letters["data"][0]["device_id"] == device
    assert "NaN" in letters["data"][0]["payload"]
    assert api.get("/v1/dead-letters", params={"reason": "bogus"}).status_code == 422
