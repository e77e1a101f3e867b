"""Delivery accounting: per-park counts of accepted, stored, duplicate and refused readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings, MqttSettings
from tests.harness.environment import LOCAL_URL
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    count_rows,
    dead_letter_reasons,
    make_messages,
    publish_concurrently,
)
from tests.harness.waiting import wait_until


def test_park_delivery_counts_duplicates_and_refusals(
    fleet: LoadFleet,
    clean_db: str,
    db_settings: DatabaseSettings,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """Published twice plus two bad readings: the park's accounting adds up exactly."""
    messages, expected = make_messages(
        fleet, readings=600, start=datetime.now(UTC) - timedelta(minutes=10)
    )
    now = datetime.now(UTC).isoformat()
    bad = [
        (
            fleet.topic(fleet.device_ids[0]),
            orjson.dumps({"ts": now, "metrics": {"humidity_pct": 150}}),
        ),
        (fleet.topic(fleet.device_ids[1]), orjson.dumps({"ts": now, "metrics": {"co2": 1}})),
    ]
    publish_concurrently(mqtt_settings, [*messages, *bad], publishers=2, copies=2)
    wait_until(lambda: count_rows(clean_db, fleet.prefix) >= len(expected), 30)
    wait_until(lambda: len(dead_letter_reasons(clean_db, fleet.prefix)) >= 4, 30)
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as api:

        def settled() -> bool:
            body = api.get(f"/v1/parks/{fleet.park}/delivery").json()
            return int(body["readings_accepted"]) >= 2 * len(expected)

        wait_until(settled, 30)
        body = api.get(f"/v1/parks/{fleet.park}/delivery").json()
        letters = api.get("/v1/dead-letters", params={"park": fleet.park}).json()
    assert body["readings_stored"] == len(expected)
    assert body["duplicates"] == len(expected)
    assert body["refused"] == {"out_of_range": 2, "unknown_metric": 2}
    assert body["refused_total"] == 4
    assert body["devices_registered"] == fleet.devices
    assert body["devices_reporting"] == fleet.devices
    assert body["silent_devices"] == []
    assert letters["count"] == 4
