"""Park and city signals, history, park metrics and availability over HTTP, worked by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import schemas.signals as signal_models
from services.storage.availability import materialize, stored_transitions
from tests.harness.storage import load, reading, rows, status, write

# A past day: the API refuses an as_of in the future.
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def at(minute: int, second: float = 0) -> datetime:
    """T0 shifted by minutes and seconds (negative: before T0)."""
    return T0 + timedelta(minutes=minute, seconds=second)


def scenario() -> tuple[list[Any], list[Any]]:
    """Readings and status messages of the worked park p1 (and p2) around T0."""
    readings = [
        # m1: online meter; energy baseline 1000 before the window, then 1015: +15.
        reading("m1", "power_kw", at(0, -10), 120),
        reading("m1", "energy_kwh", at(-6), 1000),
        reading("m1", "energy_kwh", at(-3), 1010),
        reading("m1", "energy_kwh", at(0, -10), 1015),
        # m2: energy baseline exactly at the window's start (09:55:00): 500 -> 505: +5.
        reading("m2", "power_kw", at(0, -5), 30),
        reading("m2", "energy_kwh", at(-5), 500),
        reading("m2", "energy_kwh", at(-2), 502),
        reading("m2", "energy_kwh", at(0, -5), 505),
        # l1: running; output with no baseline: 1000 -> 1040 (+40), reset to 30 (+30),
        # then 50 (+20): +90.
        reading("l1", "state", at(0, -30), "running"),
        reading("l1", "output_units", at(-4), 1000),
        reading("l1", "output_units", at(-3, 30), 1040),
        reading("l1", "output_units", at(-2, 30), 30),
        reading("l1", "output_units", at(0, -30), 50),
        # l2: running but offline by its last will at 09:59:50; output 200 -> 210: +10.
        reading("l2", "state", at(0, -20), "running"),
        reading("l2", "output_units", at(-10), 200),
        reading("l2", "output_units", at(0, -20), 210),
        # e1: 36 °C is above its own 35 (the type allows 40): in alarm.
        reading("e1", "temp_c", at(0, -15), 36),
        reading("e1", "humidity_pct", at(0, -15), 50),
        # x1: in fault but silent for 120 s: offline, so not in alarm.
        reading("x1", "state", at(-2), "fault"),
        reading("x1", "vibration_mm_s", at(-2), 9),
        # p2: l3 and m3, both online.
        reading("l3", "state", at(-1), "running"),
        reading("l3", "output_units", at(-4), 0),
        reading("l3", "output_units", at(-1), 25),
        reading("m3", "power_kw", at(-1), 10),
        reading("m3", "energy_kwh", at(-4), 0),
        reading("m3", "energy_kwh", at(-1), 4),
        # After as_of: must not change anything computed for T0.
        reading("m1", "power_kw", at(5), 999),
        reading("l1", "state", at(5), "fault"),
        reading("l1", "output_units", at(5), 5000),
    ]
    statuses = [
        status("l2", at(0, -10), False),
        status("m2", at(-1), False),  # before m2's newest reading: superseded
    ]
    return readings, statuses


@pytest.fixture
def worked(api: TestClient, clean_db: str) -> str:
    """The worked scenario written twice (the second time every reading is a duplicate)."""
    load(clean_db)
    readings, statuses = scenario()
    write(clean_db, readings, statuses)
    again = write(clean_db, readings, statuses)
    assert again.inserted == 0
    return clean_db


def get(api: TestClient, path: str, **params: str) -> dict[str, Any]:
    """GET a path and return its JSON, asserting 200."""
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_park_signals_worked_by_hand(api: TestClient, worked: str) -> None:
    """Every signal of p1 at T0 equals the hand-worked value, with its counts."""
    body = get(api, "/v1/parks/p1/signals", as_of=T0.isoformat(), window="5m")
    assert body["as_of"] == "2026-11-01T10:00:00Z"
    assert body["window_s"] == 300
    s = body["signals"]
    assert s["online_rate"] == pytest.approx(4 / 6)  # m1, m2, l1, e1
    assert s["operating_rate"] == pytest.approx(1 / 2)  # f1 runs; l2 (f2) is offline
    # (90 + 10) units / ((1200 + 600) u/h x 300 s / 3600 s = 150 units)
    assert s["capacity_utilization"] == pytest.approx(100 / 150)
    assert s["power_kw"] == pytest.approx(150.0)
    assert s["energy_kwh"] == pytest.approx(20.0)
    assert s["energy_intensity_kwh_per_unit"] == pytest.approx(0.2)
    assert s["alarm_rate"] == pytest.approx(1 / 4)
    # 100 x (0.3 x 0.5 + 0.25 x 0.6667 + 0.25 x 0.6667 + 0.2 x 0.75) = 63.33
    assert s["health_index"] == 63.3
    c = body["counts"]
    assert (c["devices_registered"], c["devices_online"]) == (6, 4)
    assert (c["offline_silence"], c["offline_last_will"], c["offline_no_data"]) == (1, 1, 0)
    assert (c["factories_with_lines"], c["factories_operating"]) == (2, 1)
    assert (c["output_units_increase"], c["energy_kwh_increase"]) == (100.0, 20.0)
    assert c["line_capacity_units_per_hour"] == 1800.0
    assert [(a["device_id"], a["metric"], a["reason"]) for a in body["alarms"]] == [
        ("e1", "temp_c", "above_max")
    ]
    assert body["components"]["no_alarm"] == {"weight": 0.2, "value": 0.75, "points": 15.0}
    assert body["coverage"]["online_rate"] == {"devices": 6, "reporting": 6, "share": 1.0}


def test_city_signals_sum_counts_and_rank_parks(api: TestClient, worked: str) -> None:
    """A city's ratios come from its parks' summed counts; parks are ranked by index."""
    body = get(api, "/v1/cities/hebi/signals", as_of=T0.isoformat())
    assert (body["city"], body["parks"]) == ("Hebi", 2)
    s = body["signals"]
    assert s["online_rate"] == pytest.approx(6 / 8)
    assert s["operating_rate"] == pytest.approx(2 / 3)
    # (100 + 25) units over (1800 + 100) u/h x 5 min = 158.33 units
    assert s["capacity_utilization"] == pytest.approx(125 / (1900 * 300 / 3600))
    assert s["energy_intensity_kwh_per_unit"] == pytest.approx(24 / 125)
    assert s["alarm_rate"] == pytest.approx(1 / 6)
    # 100 x (0.3 x 0.6667 + 0.25 x 0.7895 + 0.25 x 0.75 + 0.2 x 0.8333) = 75.15
    assert s["health_index"] == 75.2
    ranking = [(r["rank"], r["park_id"], r["health_index"]) for r in body["ranking"]]
    assert ranking == [(1, "p2", 100.0), (2, "p1", 63.3)]


def test_live_signals_default_to_now(api: TestClient, worked: str) -> None:
    """Without as_of the signals are computed for now: everything in T0 is long silent."""
    body = get(api, "/v1/parks/p1/signals")
    assert body["signals"]["online_rate"] == 0.0
    assert body["window_s"] == 300


@pytest.mark.parametrize(
    ("path", "params", "status_code", "fragment"),
    [
        ("/v1/parks/nope/signals", {}, 404, "park 'nope' does not exist"),
        ("/v1/parks/nope/signals/history", {}, 404, "does not exist"),
        ("/v1/parks/p1/metrics/nope", {}, 404, "'nope' does not exist"),
        ("/v1/cities/atlantis/signals", {}, 404, "city 'atlantis' does not exist"),
        ("/v1/devices/nope/availability", {}, 404, "does not exist"),
        ("/v1/parks/p1/signals", {"window": "5 minutes"}, 422, "window"),
        ("/v1/parks/p1/signals", {"window": "2s"}, 400, "between 10s and 1d"),
        ("/v1/parks/p1/signals", {"as_of": "2026-11-01T10:00:00"}, 422, "with an offset"),
        ("/v1/parks/p1/signals", {"as_of": "2999-01-01T00:00:00Z"}, 400, "in the future"),
        ("/v1/parks/p1/signals", {"as_of": "yesterday"}, 422, "as_of"),
        ("/v1/parks/p1/signals/history", {"bucket": "2h"}, 422, "bucket"),
        (
            "/v1/parks/p1/signals/history",
            {"start": "2026-11-01T10:00:00Z", "end": "2026-11-01T09:00:00Z"},
            400,
            "start must be",
        ),
        (
            "/v1/parks/p1/signals/history",
            {"start": "2026-01-01T00:00:00Z", "end": "2026-11-01T00:00:00Z", "bucket": "1m"},
            400,
            "widen the bucket",
        ),
        ("/v1/parks/p1/metrics/state", {"agg": "avg"}, 400, "agg=count"),
        ("/v1/parks/p1/metrics/power_kw", {"agg": "increase"}, 400, "counters only"),
        ("/v1/parks/p1/metrics/power_kw", {"state": "running"}, 400, "state metrics only"),
        ("/v1/parks/p1/metrics/power_kw", {"agg": "first"}, 422, "'increase'"),
    ],
)
def test_errors_are_problem_json(
    api: TestClient,
    worked: str,
    path: str,
    params: dict[str, str],
    status_code: int,
    fragment: str,
) -> None:
    """Unknown ids answer 404 and bad parameters 400/422, as problem+json with a reason."""
    response = api.get(path, params=params)
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"]


def test_history_follows_late_data_into_an_earlier_bucket(api: TestClient, clean_db: str) -> None:
    """A late reading changes its own bucket and the stitched counter of the next one."""
    load(clean_db)
    write(
        clean_db,
        [reading("l1", "output_units", at(m), 10 * m) for m in range(0, 30, 5)]
        + [reading("l1", "state", at(m), "running") for m in range(0, 30, 5)],
    )
    params = {"start": T0.isoformat(), "end": at(30).isoformat(), "bucket": "15m"}
    before = get(api, "/v1/parks/p1/signals/history", **params)["buckets"]
    # 0, 50, 100 in the first bucket (+100); 150, 200, 250 in the second (+150).
    assert [b["counts"]["output_units_increase"] for b in before] == [100.0, 150.0]
    write(clean_db, [reading("l1", "output_units", at(14), 145)])  # late, into bucket 1
    after = get(api, "/v1/parks/p1/signals/history", **params)["buckets"]
    assert [b["counts"]["output_units_increase"] for b in after] == [145.0, 105.0]
    first = after[0]
    assert first["ts"] == "2026-11-01T10:00:00Z"
    assert first["counts"]["minutes"] == 15
    # l1 reported in 4 of the 15 minutes; 6 devices are registered in p1.
    assert first["counts"]["device_minutes_online"] == 4
    assert first["signals"]["online_rate"] == pytest.approx(4 / (6 * 15))
    # f1 operated in 3 of 15 minutes (the state came at 10:00, 10:05, 10:10); f2 never.
    assert first["signals"]["operating_rate"] == pytest.approx(3 / 30)
    # 145 units over (1800 u/h x 0.25 h = 450 units)
    assert first["signals"]["capacity_utilization"] == pytest.approx(145 / 450)
    assert first["signals"]["energy_intensity_kwh_per_unit"] == 0.0


def test_history_of_the_worked_minute(api: TestClient, worked: str) -> None:
    """The 1-minute bucket 09:59 holds m1, m2, l1, l2, e1 and p1's increases in it."""
    body = get(
        api,
        "/v1/parks/p1/signals/history",
        start=at(-1).isoformat(),
        end=T0.isoformat(),
        bucket="1m",
    )
    [bucket] = body["buckets"]
    counts = bucket["counts"]
    assert counts["device_minutes_online"] == 5  # m1, m2, l1, l2, e1
    assert counts["output_units_increase"] == 30.0  # l1 30 -> 50, l2 200 -> 210
    assert counts["energy_kwh_increase"] == 8.0  # m1 1010 -> 1015, m2 502 -> 505
    assert bucket["signals"]["power_kw"] == 150.0
    assert counts["device_minutes_in_alarm"] == 1  # e1
    assert bucket["signals"]["alarm_rate"] == pytest.approx(1 / 5)


def test_park_metric_with_gaps_as_nulls(api: TestClient, clean_db: str) -> None:
    """The park's total power per 15 minutes; an empty bucket is null, not left out."""
    load(clean_db)
    write(
        clean_db,
        [
            reading("m1", "power_kw", at(1), 100),
            reading("m2", "power_kw", at(1, 30), 50),  # park total 150 in 10:01
            reading("m1", "power_kw", at(2), 200),
            reading("m2", "power_kw", at(2, 30), 50),  # park total 250 in 10:02
            reading("m1", "power_kw", at(31), 10),
            reading("l1", "state", at(1), "running"),
            reading("l1", "state", at(2), "idle"),
            reading("l2", "state", at(3), "running"),
            reading("l1", "output_units", at(1), 5),
            reading("l1", "output_units", at(20), 9),
        ],
    )
    params = {"start": T0.isoformat(), "end": at(45).isoformat(), "bucket": "15m"}
    power = get(api, "/v1/parks/p1/metrics/power_kw", **params)
    assert (power["agg"], power["kind"]) == ("avg", "gauge")
    assert [(p["value"], p["minutes"]) for p in power["points"]] == [
        (200.0, 2),  # (150 + 250) / 2 minutes with data
        (None, 0),
        (10.0, 1),
    ]
    assert [p["ts"] for p in power["points"]] == [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:15:00Z",
        "2026-11-01T10:30:00Z",
    ]
    peak = get(api, "/v1/parks/p1/metrics/power_kw", agg="max", **params)
    assert [p["value"] for p in peak["points"]] == [200.0, None, 10.0]
    mean = get(api, "/v1/parks/p1/metrics/power_kw", agg="mean", **params)
    assert [p["value"] for p in mean["points"]] == [100.0, None, 10.0]
    output = get(api, "/v1/parks/p1/metrics/output_units", **params)
    assert output["agg"] == "increase"
    assert [p["value"] for p in output["points"]] == [0.0, 4.0, None]
    running = get(api, "/v1/parks/p1/metrics/state", state="running", **params)
    assert [p["value"] for p in running["points"]] == [2.0, None, None]
    samples = get(api, "/v1/parks/p1/metrics/state", **params)
    assert [p["value"] for p in samples["points"]] == [3.0, None, None]


def test_device_availability_with_reasons(api: TestClient, clean_db: str) -> None:
    """Transitions with their reasons and the online share; the job stores the same."""
    load(clean_db)
    readings = [reading("m1", "power_kw", at(0, s), 1) for s in range(0, 600, 30)]
    readings += [reading("m1", "power_kw", at(20, s), 1) for s in range(0, 600, 30)]
    write(clean_db, readings, [status("m1", at(29, 40), False)])
    end = at(60)
    body = get(api, "/v1/devices/m1/availability", start=T0.isoformat(), end=end.isoformat())
    transitions = [(t["ts"], t["online"], t["reason"]) for t in body["transitions"]]
    assert transitions == [
        ("2026-11-01T10:11:00Z", False, "silence"),  # last reading 10:09:30 + 90 s
        ("2026-11-01T10:20:00Z", True, "reading"),
        ("2026-11-01T10:29:40Z", False, "last_will"),  # after the 10:29:30 reading
    ]
    assert body["online_at_start"] is True
    assert body["online_s"] == 660 + 580
    assert body["online_share"] == pytest.approx(1240 / 3600)

    async def run() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            await materialize(
                conn, now=end + timedelta(minutes=10), online_timeout=timedelta(seconds=90)
            )
            return await stored_transitions(conn, "m1", T0, end)

    stored = asyncio.run(run())
    assert [(t.ts, t.online, t.reason.value) for t in stored] == [
        (at(0), True, "reading"),  # the log starts with the device's first reading
        (at(11), False, "silence"),
        (at(20), True, "reading"),
        (at(29, 40), False, "last_will"),
    ]
    progress = rows(clean_db, "SELECT settled_to FROM availability_progress")
    assert progress[0]["settled_to"] is not None


def test_openapi_documents_the_signal_endpoints_with_examples(api: TestClient) -> None:
    """Each signals endpoint answers with its model, whose examples are valid instances."""
    spec = api.get("/openapi.json").json()
    for path, model in (
        ("/v1/parks/{park_id}/signals", signal_models.ParkSignals),
        ("/v1/parks/{park_id}/signals/history", signal_models.SignalHistory),
        ("/v1/parks/{park_id}/metrics/{metric}", signal_models.ParkMetric),
        ("/v1/cities/{city}/signals", signal_models.CitySignals),
        ("/v1/devices/{device_id}/availability", signal_models.DeviceAvailability),
    ):
        answer = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}, path
        assert spec["components"]["schemas"][model.__name__]["examples"], model.__name__
        # The model's own examples: FastAPI leaves null members out of the document's copy.
        for example in model.model_json_schema()["examples"]:
            model.model_validate(example)
