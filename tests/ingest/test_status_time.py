"""Status messages are judged in time like telemetry: a future-dated one cannot pin a device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from services.config import MqttSettings
from tests.harness.ingest import IngestProcess, LoadFleet, Publisher, dead_letter_reasons
from tests.harness.waiting import wait_until


def online_state(conninfo: str, device_id: str) -> tuple[bool | None, datetime | None] | None:
    """(online, status_ts) of a device, or None before its first status."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT online, status_ts FROM device_status WHERE device_id = %s", (device_id,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def test_future_dated_retained_offline_status_is_refused_and_cannot_pin_a_device(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """A retained offline status beyond max_future is a dead letter; a current one still counts."""
    device = fleet.device_ids[0]
    topic = fleet.topic(device, "status")
    now = datetime.now(UTC).replace(microsecond=0)
    future = orjson.dumps({"online": False, "ts": (now + timedelta(hours=1)).isoformat()})
    current = orjson.dumps({"online": True, "ts": now.isoformat()})
    publisher = Publisher(mqtt_settings)
    try:
        infos = [publisher.client.publish(topic, p, qos=1, retain=True) for p in (future, current)]
        wait_until(lambda: all(i.is_published() for i in infos), 10)
        wait_until(lambda: online_state(clean_db, device) is not None, 15)
        assert online_state(clean_db, device) == (True, now)
        assert dead_letter_reasons(clean_db, fleet.prefix) == ["future_timestamp"]
    finally:
        # An empty retained message removes the retained one from the broker.
        publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        publisher.close()
