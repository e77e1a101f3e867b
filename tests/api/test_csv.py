"""CSV by ``Accept: text/csv``: the JSON answer's points, a header row, streamed in pages."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.api.csv_stream import PAGE_ROWS
from services.api.routes.signals import HISTORY_CSV_HEADER, HISTORY_PAGE_BUCKETS
from services.core.aggregates import Agg
from services.core.history import Bucket
from services.storage import history_queries
from services.storage.history_queries import history_pages
from tests.harness.storage import load, reading, write

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
CSV = {"accept": "text/csv"}


def at(minute: float) -> datetime:
    """T0 shifted by minutes."""
    return T0 + timedelta(minutes=minute)


def z(ts: datetime) -> str:
    """RFC 3339 UTC as the API writes it."""
    return ts.isoformat().replace("+00:00", "Z")


@pytest.fixture
def stored(api: TestClient, clean_db: str) -> str:
    """Readings of a meter, a line and its counter over three days, written and folded."""
    del api
    load(clean_db)
    readings = []
    for day in range(3):
        for minute in (0, 1, 2, 30, 1439):  # the last minute of each day ends a CSV page
            base = day * 1440 + minute
            readings += [
                reading("m1", "power_kw", at(base + 0.25), 100 + base % 7 + 0.5),
                reading("m1", "power_kw", at(base + 0.75), 90 + base % 5),
                reading("l1", "state", at(base + 0.5), "running" if minute % 2 else "fault"),
                reading("l1", "output_units", at(base + 0.5), float(base)),
            ]
    write(clean_db, readings)
    return clean_db


def csv_rows(api: TestClient, path: str, **params: str) -> list[list[str]]:
    """GET as CSV; the rows, header first."""
    response = api.get(path, params=params, headers=CSV)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.reader(io.StringIO(response.text)))


def json_body(api: TestClient, path: str, **params: str) -> dict[str, Any]:
    """GET as JSON (the default)."""
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def text(value: object) -> str:
    """A JSON value as its CSV cell."""
    return "" if value is None else str(value)


@pytest.mark.parametrize(
    "params",
    [
        {"metric": "power_kw"},
        {"metric": "state"},
        {"metric": "power_kw", "bucket": "1m"},
        {"metric": "power_kw", "bucket": "7m", "agg": "max"},
        {"metric": "state", "bucket": "1h", "agg": "count"},
        {"metric": "state", "bucket": "1h"},
        {"metric": "output_units", "bucket": "1d", "agg": "last"},
    ],
)
def test_device_readings_as_csv_are_the_json_points(
    api: TestClient, stored: str, params: dict[str, str]
) -> None:
    """Raw and bucketed, gauge and state: the CSV rows are the JSON points, header first."""
    del stored
    device = "l1" if params["metric"] != "power_kw" else "m1"
    span = {"start": z(at(-3)), "end": z(at(3 * 1440)), "limit": "100000", **params}
    path = f"/v1/devices/{device}/readings"
    rows = csv_rows(api, path, **span)
    points = json_body(api, path, **span)["points"]
    assert rows[0] == ["ts", "value"]
    assert rows[1:] == [[p["ts"], text(p["value"])] for p in points]
    assert any(row[1] for row in rows[1:])


def test_raw_csv_has_no_default_limit_but_honours_one(api: TestClient, stored: str) -> None:
    """JSON stops at its default 10,000; CSV streams every point unless ``limit`` is given."""
    del stored
    span = {"metric": "power_kw", "start": z(at(-3)), "end": z(at(3 * 1440))}
    assert len(csv_rows(api, "/v1/devices/m1/readings", **span)) == 1 + 30
    assert len(csv_rows(api, "/v1/devices/m1/readings", limit="4", **span)) == 1 + 4


def test_history_as_csv_is_the_json_buckets_across_pages(api: TestClient, stored: str) -> None:
    """Three days of minutes (three query pages): every bucket, every signal and count."""
    del stored
    span = {"start": z(T0), "end": z(at(3 * 1440)), "bucket": "1m"}
    path = "/v1/parks/p1/signals/history"
    rows = csv_rows(api, path, **span)
    buckets = json_body(api, path, **span)["buckets"]
    assert len(buckets) == 3 * 1440 > 2 * HISTORY_PAGE_BUCKETS
    assert rows[0] == list(HISTORY_CSV_HEADER)
    expected = [
        [
            b["ts"],
            b["start"],
            b["end"],
            *(text(v) for v in b["signals"].values()),
            *(text(v) for v in b["counts"].values()),
        ]
        for b in buckets
    ]
    assert rows[1:] == expected
    assert sum(1 for row in rows[1:] if row[3]) >= 15  # minutes with devices online


@pytest.mark.parametrize(
    ("metric", "params"),
    [
        ("power_kw", {"bucket": "15m"}),
        ("power_kw", {"bucket": "1h", "agg": "max"}),
        ("output_units", {"bucket": "1d"}),
        ("state", {"bucket": "1h", "state": "fault"}),
    ],
)
def test_park_metric_as_csv_is_the_json_points(
    api: TestClient, stored: str, metric: str, params: dict[str, str]
) -> None:
    """The park metric's points, minutes with data included, nulls as empty cells."""
    del stored
    span = {"start": z(T0), "end": z(at(3 * 1440)), **params}
    path = f"/v1/parks/p1/metrics/{metric}"
    rows = csv_rows(api, path, **span)
    points = json_body(api, path, **span)["points"]
    assert rows[0] == ["ts", "value", "minutes"]
    assert rows[1:] == [[p["ts"], text(p["value"]), str(p["minutes"])] for p in points]
    assert any(row[1] not in {"", "0.0"} for row in rows[1:])
    if params["bucket"] != "1d":  # every day has data; shorter buckets have gaps
        assert any(row[1] == "" for row in rows[1:])


def test_accept_decides_json_csv_or_406(api: TestClient, stored: str) -> None:
    """JSON by default and for */*; CSV when asked; an Accept that takes neither is a 406."""
    del stored
    path = "/v1/parks/p1/metrics/power_kw"
    params = {"start": z(T0), "end": z(at(60))}
    for accept in ("*/*", "application/json", "text/csv;q=0.5, application/json"):
        response = api.get(path, params=params, headers={"accept": accept})
        assert response.headers["content-type"].startswith("application/json"), accept
    refused = api.get(path, params=params, headers={"accept": "text/html"})
    assert refused.status_code == 406
    assert refused.headers["content-type"] == "application/problem+json"
    assert api.get(path, params=params, headers={"accept": "text/*"}).text.startswith("ts,")


def test_a_year_of_minutes_streams_as_csv_in_bounded_pages(api: TestClient, stored: str) -> None:
    """A year at 1 min: refused as JSON, streamed as CSV; the query hands it over in pages."""
    start, end = T0 - timedelta(days=365), T0
    params = {"start": z(start), "end": z(end), "bucket": "1m"}
    path = "/v1/parks/p1/metrics/power_kw"
    assert api.get(path, params=params).status_code == 400
    minutes = 365 * 1440
    with api.stream("GET", path, params=params, headers=CSV) as response:
        assert response.status_code == 200
        lines = sum(1 for _ in response.iter_lines())
    assert lines == 1 + minutes

    async def pages() -> list[int]:
        async with await psycopg.AsyncConnection.connect(stored, autocommit=True) as conn:
            return [
                len(page)
                async for page in history_queries.park_metric_pages(
                    conn,
                    history_queries.MetricRequest(
                        "p1", "power_kw", start, end, Bucket.MINUTE, Agg.AVG
                    ),
                    page_rows=PAGE_ROWS,
                )
            ]

    sizes = asyncio.run(pages())
    assert len(sizes) == math.ceil(minutes / PAGE_ROWS)
    assert max(sizes) == PAGE_ROWS


def test_history_pages_split_at_bucket_starts() -> None:
    """Pages cover the range once, each at most N buckets, every cut at a bucket start."""
    start, end = at(7), at(3 * 1440 + 7)
    pages = history_pages(start, end, Bucket.HOUR, 24)
    assert pages[0][0] == start
    assert pages[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pages))
    assert all(hi - lo <= timedelta(hours=24) for lo, hi in pages)
    assert all(hi.minute == 0 for _, hi in pages[:-1])
    assert len(pages) == 4
