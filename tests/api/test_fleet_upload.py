"""Fleet uploads cannot hurt the service: aliases refused, limits enforced, loads off the loop."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings
from tests.harness.api import big_fleet
from tests.harness.environment import LOCAL_URL
from tests.harness.live import ApiServer
from tests.harness.waiting import wait_until

YAML = {"content-type": "application/yaml"}
SMALL = """
parks:
  - id: up-park
    factories:
      - id: up-f1
        devices:
          - {id: up-meter, type: power_meter}
"""
# The "billion laughs": nine levels of nine aliases, 1.6 KB that expand to 9^9 strings.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.fixture
def small_limits(db_settings: DatabaseSettings, clean_db: str) -> Iterator[TestClient]:
    """The API with tiny fleet limits."""
    del clean_db
    settings = ApiSettings(fleet_max_bytes=2048, fleet_max_nodes=100)
    with TestClient(create_app(settings, db_settings), base_url=LOCAL_URL) as client:
        yield client


def test_alias_bomb_is_refused_before_expansion(api: TestClient) -> None:
    """The billion-laughs file is a 422 problem naming aliases; the registry is untouched."""
    assert api.put("/v1/fleet", content=SMALL, headers=YAML).status_code == 200
    refused = api.put("/v1/fleet", content=BOMB, headers=YAML)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "alias"
    assert "anchors (&a)" in refused.json()["detail"]
    assert api.get("/v1/parks").json()["count"] == 1


def test_merge_keys_and_lone_aliases_are_refused(api: TestClient) -> None:
    """An anchor with a merge key, or an alias, is refused like the bomb."""
    merged = SMALL.replace(
        "- {id: up-meter, type: power_meter}", "- &m {id: up-meter, type: power_meter}"
    )
    assert api.put("/v1/fleet", content=merged, headers=YAML).json()["reason"] == "alias"
    alias = "parks: *nothing\n"
    assert api.put("/v1/fleet", content=alias, headers=YAML).json()["reason"] == "alias"


def test_size_node_and_depth_limits_are_413(small_limits: TestClient) -> None:
    """Over the byte, node or depth limit the answer is a 413 problem saying which."""
    big = small_limits.put("/v1/fleet", content="#" * 4096, headers=YAML)
    assert big.status_code == 413
    assert "bytes" in big.json()["detail"]
    many = "parks: [" + ", ".join(["x"] * 150) + "]"
    nodes = small_limits.put("/v1/fleet", content=many, headers=YAML)
    assert nodes.status_code == 413
    assert "nodes" in nodes.json()["detail"]
    deep = small_limits.put("/v1/fleet", content="a: " + "[" * 40 + "]" * 40, headers=YAML)
    assert deep.status_code == 413
    assert "deeper" in deep.json()["detail"]


def test_undecodable_and_json_bodies(api: TestClient) -> None:
    """A body that is not UTF-8 is a 422 problem; a JSON fleet loads."""
    bad = api.put("/v1/fleet", content=b"parks: \xff\xfe", headers=YAML)
    assert bad.status_code == 422
    assert bad.json()["reason"] == "encoding"
    fleet = {"parks": [{"id": "json-park", "factories": []}]}
    loaded = api.put(
        "/v1/fleet", content=orjson.dumps(fleet), headers={"content-type": "application/json"}
    )
    assert loaded.status_code == 200
    assert loaded.json()["parks"] == 1


def test_healthz_answers_while_a_100k_device_fleet_loads(
    db_settings: DatabaseSettings, clean_db: str, tmp_path: Path
) -> None:
    """During a 100,000-device PUT /v1/fleet the API keeps answering /healthz and refuses a bomb."""
    del clean_db
    api = ApiServer(db_settings, tmp_path)
    api.start()
    body = big_fleet(100_000).encode()
    result: dict[str, object] = {}

    def upload() -> None:
        conn = http.client.HTTPConnection(api.host, api.port, timeout=300)
        try:
            conn.request("PUT", "/v1/fleet", body=body, headers=YAML)
            response = conn.getresponse()
            result["status"], result["body"] = response.status, orjson.loads(response.read())
        finally:
            conn.close()

    loader = threading.Thread(target=upload)
    try:
        loader.start()
        answered = 0
        while loader.is_alive():
            status, _ = api.get("/healthz")
            assert status == 200
            answered += 1
            if answered == 3:
                # Refused during the load, not queued behind it, and never expanded.
                conn = http.client.HTTPConnection(api.host, api.port, timeout=300)
                conn.request("PUT", "/v1/fleet", body=BOMB.encode(), headers=YAML)
                bomb = conn.getresponse()
                assert bomb.status == 422
                assert orjson.loads(bomb.read())["reason"] == "alias"
                conn.close()
        loader.join()
        wait_until(lambda: "status" in result, 5)
        assert result["status"] == 200, result
        assert result["body"]["devices"] == 100_000  # type: ignore[index]
        assert answered >= 3, "the load finished before /healthz was asked three times"
    finally:
        api.stop()
