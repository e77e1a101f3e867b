"""No input makes the API answer 500: out-of-range times, odd digits, NUL bytes, bad times."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.harness.api import load

HOSTILE = [
    "/v1/parks/hebi-tech/signals/history?start=0001-01-01T00:00:00Z&end=9999-12-31T00:00:00Z&bucket=1d",
    "/v1/parks/hebi-tech/signals/history?start=0001-01-01&end=9999-12-31&bucket=366d",
    "/v1/devices/f01-meter-1/readings?metric=power_kw&start=0001-01-01T00:00:00Z&end=9999-12-31T23:59:59Z&bucket=366d",
    "/v1/devices/f01-meter-1/availability?end=0001-01-01T00:30:00Z",
    "/v1/parks/hebi-tech/delivery?end=0001-01-01T00:30:00Z",
    "/v1/parks/hebi-tech/signals?as_of=0001-01-01T00:00:00Z",
    "/v1/parks/hebi-tech/signals?as_of=0.5",
    "/v1/parks/hebi-tech/signals?as_of=2026-11-26",
    "/v1/parks/hebi-tech/signals?window=%D9%A3m",
    "/v1/devices/f01-meter-1/readings?metric=power_kw&bucket=%D9%A3m",
    "/v1/devices/f01-meter-1/readings?metric=power_kw&limit=%D9%A3",
    "/v1/parks/hebi-tech/metrics/power_kw?start=0001-01-01T00:00:00Z&end=9999-12-31T00:00:00Z",
    "/static/app.js%00.css",
    "/static/%ED%A0%80.js",
    "/v1/dead-letters?device=%00",
    "/v1/parks/hebi%00tech",
    "/v1/parks/hebi-tech/metrics/power_kw?state=%00",
    "/v1/devices/f01-meter-1/readings?metric=%00",
    "/v1/cities/Hebi%0A/signals",
]  # fmt: skip


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_input_gets_a_4xx_problem(api: TestClient, url: str) -> None:
    """Each hostile request is refused with a 4xx problem document, never a 500."""
    load(api)
    response = api.get(url)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code


def test_method_not_allowed_keeps_allow(api: TestClient) -> None:
    """A 405 is a problem document that still names the allowed methods."""
    response = api.post("/v1/parks")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.headers["content-type"] == "application/problem+json"
