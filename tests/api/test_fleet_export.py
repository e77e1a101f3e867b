"""``GET /v1/fleet``: the registry as loaded, YAML or JSON, and GET → PUT → GET is identical."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import yaml
from fastapi.testclient import TestClient

from schemas.fleet import parse_fleet
from services.api.app import create_app
from services.api.fleet_worker import INLINE_MAX_DEVICES
from services.config import ApiSettings, DatabaseSettings
from tests.harness.api import big_fleet
from tests.harness.environment import LOCAL_URL

# Sorted as the registry reads back; a custom type, a changed built-in type, overrides.
FLEET = """
device_types:
  - id: chiller
    description: Water chiller
    metrics:
      state: {kind: state, states: [cooling, idle, fault, defrost], alarm_states: [defrost]}
      supply_temp_c: {kind: gauge, unit: degC, min: -20, max: 40, alarm: {max: 12}}
      energy_kwh: {kind: counter, unit: kWh, min: 0}
  - id: env_sensor
    description: Environment sensor with a CO2 channel
    metrics:
      temp_c: {kind: gauge, unit: degC, min: -40, max: 85, alarm: {min: 0, max: 40}}
      co2_ppm: {kind: gauge, unit: ppm, min: 0, max: 10000, alarm: {max: 1500}}
parks:
  - id: exp-park
    name: 鹤壁 Export Park
    city: Hebi
    factories:
      - id: exp-f1
        name: Cold Store
        industry: logistics
        devices:
          - {id: exp-chiller-1, type: chiller, thresholds: {supply_temp_c: {min: 2, max: 9}}}
          - {id: exp-env-1, type: env_sensor, thresholds: {co2_ppm: {max: 1200}}}
          - {id: exp-line-1, type: production_line, capacity_units_per_hour: 750.5}
      - id: exp-f2
  - id: exp-park2
"""
JSON = {"accept": "application/json"}


def get(api: TestClient, headers: dict[str, str] | None = None) -> bytes:
    response = api.get("/v1/fleet", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.content


def put(api: TestClient, body: bytes, content_type: str) -> None:
    response = api.put("/v1/fleet", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text


def test_get_put_get_is_identical_in_yaml_and_json(api: TestClient) -> None:
    """The export loads back to the same registry, custom and changed types included."""
    put(api, FLEET.encode(), "application/yaml")
    first = get(api)
    assert parse_fleet(first) == parse_fleet(FLEET)
    put(api, first, "application/yaml")
    assert get(api) == first
    as_json = get(api, JSON)
    assert parse_fleet(as_json) == parse_fleet(FLEET)
    put(api, as_json, "application/json")
    assert get(api, JSON) == as_json
    assert get(api) == first
    exported = yaml.safe_load(first)
    assert exported == orjson.loads(as_json)
    [chiller, env] = exported["device_types"]
    assert (chiller["id"], env["id"]) == ("chiller", "env_sensor")
    devices = exported["parks"][0]["factories"][0]["devices"]
    assert devices[0]["thresholds"] == {"supply_temp_c": {"min": 2.0, "max": 9.0}}
    assert devices[1]["thresholds"] == {"co2_ppm": {"max": 1200.0}}


def test_a_large_fleet_exports_from_a_worker_process_and_round_trips(api: TestClient) -> None:
    """Past the inline bound the export runs in a worker process; the answer is the same."""
    devices = INLINE_MAX_DEVICES + 500
    fleet = big_fleet(devices)
    put(api, fleet.encode(), "application/yaml")
    first = get(api)
    assert devices_of(first) == devices_of(fleet.encode())
    assert len(devices_of(first)) == devices
    put(api, first, "application/yaml")
    assert get(api) == first


def devices_of(text: bytes) -> set[tuple[str, str, str, str]]:
    """(park, factory, device, type) of every device of a fleet file (the registry sorts)."""
    return {
        (p.id, f.id, d.id, d.type)
        for p in parse_fleet(text).parks
        for f in p.factories
        for d in f.devices
    }


def test_fleet_media_types_by_accept(api: TestClient) -> None:
    """YAML by default, JSON when asked, 406 for what is neither."""
    put(api, FLEET.encode(), "application/yaml")
    assert api.get("/v1/fleet").headers["content-type"].startswith("application/yaml")
    assert api.get("/v1/fleet", headers=JSON).headers["content-type"] == "application/json"
    refused = api.get("/v1/fleet", headers={"accept": "text/csv"})
    assert refused.status_code == 406
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.fixture
def keyed(db_settings: DatabaseSettings, clean_db: str) -> Iterator[TestClient]:
    """The API with a bootstrap admin key, so scopes apply."""
    del clean_db
    settings = ApiSettings(api_keys="psk_export-admin-key-0123456789abcdefghij")
    with TestClient(create_app(settings, db_settings), base_url=LOCAL_URL) as client:
        yield client


def test_fleet_export_and_csv_need_the_read_scope(keyed: TestClient) -> None:
    """No key: 401; a read key reads the fleet and CSV but cannot PUT the fleet."""
    admin = {"authorization": "Bearer psk_export-admin-key-0123456789abcdefghij"}
    put_as_admin = keyed.put(
        "/v1/fleet", content=FLEET, headers={**admin, "content-type": "application/yaml"}
    )
    assert put_as_admin.status_code == 200, put_as_admin.text
    made = keyed.post("/v1/keys", json={"name": "reader", "scope": "read"}, headers=admin)
    assert made.status_code == 201, made.text
    reader = {"authorization": f"Bearer {made.json()['key']}"}
    csv_path = "/v1/parks/exp-park/metrics/output_units"
    assert keyed.get("/v1/fleet").status_code == 401
    assert keyed.get(csv_path, headers={"accept": "text/csv"}).status_code == 401
    assert keyed.get("/v1/fleet", headers=reader).status_code == 200
    assert keyed.get(csv_path, headers={**reader, "accept": "text/csv"}).status_code == 200
    body = keyed.get("/v1/fleet", headers=reader).content
    refused = keyed.put(
        "/v1/fleet", content=body, headers={**reader, "content-type": "application/yaml"}
    )
    assert refused.status_code == 403
