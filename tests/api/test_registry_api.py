"""Fleet loading, parks, devices, readings and errors over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import psycopg
from fastapi.testclient import TestClient

from schemas.api import Readings
from services.core.batching import Batch
from services.core.readings import Reading
from services.storage.fleet_store import read_fleet
from services.storage.writer import BatchWriter
from tests.harness.api import FLEET, load

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)


def insert_readings(
    conninfo: str, rows: list[tuple[str, str, datetime, float | None, str | None]]
) -> None:
    """Store readings with the production writer, which keeps the roll-ups with them."""

    async def run() -> None:
        writer = BatchWriter(conninfo)
        await writer.connect()
        try:
            await writer.write(
                Batch(readings=[Reading(d, m, ts, v, text, ts) for d, m, ts, v, text in rows])
            )
        finally:
            await writer.close()

    asyncio.run(run())


def test_fleet_put_then_parks_are_listed(api: TestClient) -> None:
    """A YAML fleet loaded over HTTP shows up in the parks list and the park detail."""
    load(api)
    parks = api.get("/v1/parks").json()
    assert parks == {
        "data": [
            {"park_id": "hebi-tech", "name": "Hebi Digital Economy Park", "name_zh": "",
             "city": "Hebi", "factories": 1, "devices": 3}
        ],
        "count": 1,
    }  # fmt: skip
    park = api.get("/v1/parks/hebi-tech").json()
    assert [d["device_id"] for d in park["factories"][0]["devices"]] == [
        "f01-env-1",
        "f01-line-1",
        "f01-meter-1",
    ]


def test_chinese_names_are_stored_served_and_round_trip(api: TestClient, clean_db: str) -> None:
    """``name_zh`` of a park and a factory is in the parks list, the detail and GET /v1/fleet."""
    fleet = FLEET.replace(
        "name: Hebi Digital Economy Park",
        "name: Hebi Digital Economy Park\n    name_zh: 鹤壁数字经济产业园",
    ).replace("name: Precision Parts", "name: Precision Parts\n        name_zh: 精密零件厂")
    loaded = api.put(
        "/v1/fleet", content=fleet.encode(), headers={"content-type": "application/yaml"}
    )
    assert loaded.status_code == 200, loaded.text
    assert api.get("/v1/parks").json()["data"][0]["name_zh"] == "鹤壁数字经济产业园"
    park = api.get("/v1/parks/hebi-tech").json()
    assert (park["name"], park["name_zh"]) == ("Hebi Digital Economy Park", "鹤壁数字经济产业园")
    assert (park["factories"][0]["name"], park["factories"][0]["name_zh"]) == (
        "Precision Parts",
        "精密零件厂",
    )
    with psycopg.connect(clean_db) as conn:
        stored = read_fleet(conn)
    assert stored.parks[0].name_zh == "鹤壁数字经济产业园"
    assert stored.parks[0].factories[0].name_zh == "精密零件厂"
    exported = api.get("/v1/fleet", headers={"accept": "application/json"})
    assert exported.status_code == 200, exported.text
    assert exported.json()["parks"][0]["name_zh"] == "鹤壁数字经济产业园"
    assert exported.json()["parks"][0]["factories"][0]["name_zh"] == "精密零件厂"
    too_long = fleet.replace("name_zh: 精密零件厂", "name_zh: " + "厂" * 201)
    refused = api.put(
        "/v1/fleet", content=too_long.encode(), headers={"content-type": "application/yaml"}
    )
    assert refused.status_code == 422, refused.text


def test_invalid_fleet_is_refused_with_a_reason(api: TestClient) -> None:
    """A fleet with an unknown device type is refused as problem+json naming the device."""
    bad = FLEET.replace("type: power_meter", "type: toaster")
    response = api.put("/v1/fleet", content=bad)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "toaster" in response.json()["detail"]


def test_unknown_ids_answer_problem_json(api: TestClient) -> None:
    """Unknown park, device and metric are 404 problems with a clear detail."""
    load(api)
    for path in ("/v1/parks/nope", "/v1/devices/nope/latest", "/v1/parks/nope/delivery"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "nope" in response.json()["detail"]
    response = api.get("/v1/devices/f01-meter-1/readings", params={"metric": "volts"})
    assert response.status_code == 404


def test_bad_parameters_answer_400_or_422(api: TestClient) -> None:
    """Bad buckets, naive times, reversed intervals and invalid ids are refused clearly."""
    load(api)
    base = "/v1/devices/f01-meter-1/readings"
    cases = [
        # Not <digits><s|m|h|d>: breaks the documented pattern, so malformed.
        ({"metric": "power_kw", "bucket": "5 parsecs"}, 422),
        ({"metric": "power_kw", "bucket": "0s"}, 400),
        # A time without an offset breaks the documented RFC 3339 pattern: malformed.
        ({"metric": "power_kw", "start": "2026-11-26T10:00:00"}, 422),
        (
            {"metric": "power_kw", "start": "2026-11-26T10:00:00Z", "end": "2026-11-26T09:00:00Z"},
            400,
        ),
        ({"metric": "power_kw", "agg": "median", "bucket": "1m"}, 422),
        ({"metric": "power_kw", "agg": "increase", "bucket": "1m"}, 422),
        ({"metric": "power_kw", "agg": "avg"}, 400),
    ]
    for params, status in cases:
        response = api.get(base, params=params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert api.get("/v1/devices/BAD ID/latest").status_code == 422


def test_readings_raw_and_bucketed(api: TestClient, clean_db: str) -> None:
    """Raw points come back in order; buckets aggregate and show gaps as nulls."""
    load(api)
    insert_readings(
        clean_db,
        [
            ("f01-meter-1", "power_kw", T0 + timedelta(seconds=10), 10.0, None),
            ("f01-meter-1", "power_kw", T0 + timedelta(seconds=50), 20.0, None),
            ("f01-meter-1", "power_kw", T0 + timedelta(minutes=2, seconds=5), 40.0, None),
        ],
    )
    params = {
        "metric": "power_kw",
        "start": T0.isoformat(),
        "end": (T0 + timedelta(minutes=3)).isoformat(),
    }
    raw = api.get("/v1/devices/f01-meter-1/readings", params=params).json()
    assert [p["value"] for p in raw["points"]] == [10.0, 20.0, 40.0]
    assert raw["bucket"] is None
    bucketed = api.get(
        "/v1/devices/f01-meter-1/readings", params={**params, "bucket": "1m", "agg": "avg"}
    ).json()
    assert [(datetime.fromisoformat(p["ts"]), p["value"]) for p in bucketed["points"]] == [
        (T0, 15.0),
        (T0 + timedelta(minutes=1), None),
        (T0 + timedelta(minutes=2), 40.0),
    ]
    # Buckets are served as plain data: exactly what the Readings model would write.
    assert bucketed == Readings.model_validate(bucketed).model_dump(mode="json")
    maxed = api.get(
        "/v1/devices/f01-meter-1/readings", params={**params, "bucket": "1m", "agg": "max"}
    ).json()
    assert [p["value"] for p in maxed["points"]] == [20.0, None, 40.0]
    shanghai = timezone(timedelta(hours=8))
    local = api.get(
        "/v1/devices/f01-meter-1/readings",
        params={**params, "start": T0.astimezone(shanghai).isoformat(), "bucket": "1m"},
    ).json()
    assert local == Readings.model_validate(local).model_dump(mode="json")
    assert datetime.fromisoformat(local["start"]) == T0


def test_state_readings_bucket_with_last(api: TestClient, clean_db: str) -> None:
    """A state metric buckets with first/last/count and refuses numeric aggregates."""
    load(api)
    insert_readings(
        clean_db,
        [
            ("f01-line-1", "state", T0 + timedelta(seconds=5), None, "idle"),
            ("f01-line-1", "state", T0 + timedelta(seconds=30), None, "running"),
        ],
    )
    params = {
        "metric": "state",
        "start": T0.isoformat(),
        "end": (T0 + timedelta(minutes=1)).isoformat(),
        "bucket": "1m",
    }
    last = api.get("/v1/devices/f01-line-1/readings", params=params).json()
    assert last["agg"] == "last"
    assert [p["value"] for p in last["points"]] == ["running"]
    assert (
        api.get("/v1/devices/f01-line-1/readings", params={**params, "agg": "avg"}).status_code
        == 400
    )


def test_latest_is_offline_after_a_last_will(api: TestClient, clean_db: str) -> None:
    """A device whose status went offline after its newest reading is not online."""
    load(api)
    now = datetime.now(UTC)
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            "INSERT INTO device_status (device_id, online, status_ts, last_seen_ts)"
            " VALUES ('f01-meter-1', false, %s, %s)",
            (now, now - timedelta(seconds=5)),
        )
    body = api.get("/v1/devices/f01-meter-1/latest").json()
    assert body["online"] is False


def test_readyz_reports_a_degraded_or_stale_ingest_worker(api: TestClient, clean_db: str) -> None:
    """Readiness is degraded while a worker reports a database outage or stops reporting."""
    assert api.get("/readyz").json()["status"] == "ready"
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            "INSERT INTO ingest_workers (client_id, pid, started_at, heartbeat_at, degraded)"
            " VALUES ('w1', 1, now(), now(), true),"
            " ('w2', 2, now(), now() - interval '1 minute', false)"
        )
    body = api.get("/readyz").json()
    assert body["status"] == "degraded"
    assert body["checks"]["ingest:w1"] == "degraded"
    assert body["checks"]["ingest:w2"] == "stale"
    assert api.get("/healthz").json() == {"status": "ok", "checks": {}}
