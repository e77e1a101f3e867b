"""Scoped API keys, dashboard sessions, trusted hosts and CORS over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api.app import create_app
from services.cli import main as cli_main
from services.config import ApiSettings, DatabaseSettings
from services.stack.stack import settings_env
from tests.harness.environment import LOCAL_URL

BOOTSTRAP = "bootstrap-admin-key-for-tests-0123456789"
FLEET = """
parks:
  - id: acc-park
    factories:
      - id: acc-f1
        devices:
          - {id: acc-meter, type: power_meter}
"""
YAML = {"content-type": "application/yaml"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(db_settings: DatabaseSettings, clean_db: str) -> Iterator[TestClient]:
    """The API with a bootstrap admin key, over an emptied database."""
    del clean_db
    settings = ApiSettings(api_keys=SecretStr(BOOTSTRAP))
    with TestClient(create_app(settings, db_settings), base_url=LOCAL_URL) as client:
        yield client


def make_key(client: TestClient, name: str, scope: str) -> str:
    response = client.post(
        "/v1/keys", json={"name": name, "scope": scope}, headers=bearer(BOOTSTRAP)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == name
    assert body["scope"] == scope
    key: str = body["key"]
    return key


def assert_problem(response: object, status: int) -> None:
    assert getattr(response, "status_code", None) == status, getattr(response, "text", "")
    headers = getattr(response, "headers", {})
    assert headers["content-type"] == "application/problem+json"


def test_no_key_and_bad_key_get_401_problems(keyed: TestClient) -> None:
    """Without a key, with a wrong one, or with the old ?api_key= the answer is a 401 problem."""
    refused = keyed.get("/v1/parks")
    assert_problem(refused, 401)
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert_problem(keyed.get("/v1/parks", headers=bearer("psk_wrong")), 401)
    assert_problem(keyed.get("/v1/parks", headers={"X-API-Key": "psk_wrong"}), 401)
    assert_problem(keyed.get("/v1/parks", headers={"Authorization": "Basic eDp5"}), 401)
    assert_problem(keyed.get("/v1/parks", params={"api_key": BOOTSTRAP}), 401)
    assert keyed.get("/v1/parks", headers=bearer(BOOTSTRAP)).status_code == 200
    assert keyed.get("/v1/parks", headers={"X-API-Key": BOOTSTRAP}).status_code == 200
    assert keyed.get("/healthz").status_code == 200


def test_scopes_nest_read_write_admin(keyed: TestClient) -> None:
    """A read key cannot load a fleet (403), a write key can but cannot manage keys."""
    read, write, admin = (make_key(keyed, s, s) for s in ("read", "write", "admin"))

    denied = keyed.put("/v1/fleet", content=FLEET, headers={**YAML, **bearer(read)})
    assert_problem(denied, 403)
    assert denied.json()["required_scope"] == "write"
    assert keyed.get("/v1/parks", headers=bearer(read)).status_code == 200
    assert_problem(keyed.get("/v1/keys", headers=bearer(read)), 403)

    loaded = keyed.put("/v1/fleet", content=FLEET, headers={**YAML, **bearer(write)})
    assert loaded.status_code == 200, loaded.text
    assert keyed.get("/v1/parks/acc-park", headers=bearer(write)).status_code == 200
    assert_problem(keyed.get("/v1/keys", headers=bearer(write)), 403)
    made = keyed.post("/v1/keys", json={"name": "x", "scope": "read"}, headers=bearer(write))
    assert_problem(made, 403)

    listed = keyed.get("/v1/keys", headers=bearer(admin))
    assert listed.status_code == 200
    assert [(k["name"], k["scope"]) for k in listed.json()["data"]] == [
        ("admin", "admin"),
        ("read", "read"),
        ("write", "write"),
    ]
    assert listed.json()["bootstrap_keys"] == 1
    assert read not in listed.text
    assert write not in listed.text


def test_revoked_key_gets_401_at_once(keyed: TestClient) -> None:
    """DELETE /v1/keys/{name} stops the key on its next request; an unknown name is 404."""
    key = make_key(keyed, "soon-gone", "read")
    assert keyed.get("/v1/parks", headers=bearer(key)).status_code == 200
    assert keyed.delete("/v1/keys/soon-gone", headers=bearer(BOOTSTRAP)).status_code == 204
    assert_problem(keyed.get("/v1/parks", headers=bearer(key)), 401)
    assert_problem(keyed.delete("/v1/keys/soon-gone", headers=bearer(BOOTSTRAP)), 404)


def test_duplicate_and_malformed_key_requests_are_refused(keyed: TestClient) -> None:
    """A taken name is 409, a bad name or scope 422, both problem+json."""
    make_key(keyed, "dup", "read")
    again = keyed.post("/v1/keys", json={"name": "dup", "scope": "read"}, headers=bearer(BOOTSTRAP))
    assert_problem(again, 409)
    bad_name = keyed.post(
        "/v1/keys", json={"name": "Dup!", "scope": "read"}, headers=bearer(BOOTSTRAP)
    )
    assert_problem(bad_name, 422)
    bad_scope = keyed.post(
        "/v1/keys", json={"name": "ok", "scope": "root"}, headers=bearer(BOOTSTRAP)
    )
    assert_problem(bad_scope, 422)


def test_keys_are_stored_as_digests_only(keyed: TestClient, clean_db: str) -> None:
    """The database holds a 32-byte digest per key, never the key."""
    key = make_key(keyed, "stored", "write")
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute("SELECT name, scope, key_digest FROM api_keys").fetchall()
    assert len(rows) == 1
    name, scope, digest = rows[0]
    assert (name, scope, len(digest)) == ("stored", "write", 32)
    assert key.encode() not in bytes(digest)


def test_session_cookie_reads_but_cannot_write(keyed: TestClient) -> None:
    """Signing in sets an HttpOnly SameSite=Strict cookie that reads /v1 but cannot PUT a fleet."""
    admin = make_key(keyed, "ops", "admin")
    signed = keyed.post("/v1/session", json={"key": admin})
    assert signed.status_code == 201, signed.text
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("parksense_session=pss_")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert admin not in cookie
    assert signed.json()["scope"] == "read"

    me = keyed.get("/v1/session")
    assert me.status_code == 200
    assert me.json()["name"] == "ops"
    assert me.json()["via"] == "session"
    assert keyed.get("/v1/parks").status_code == 200
    assert_problem(keyed.put("/v1/fleet", content=FLEET, headers=YAML), 403)

    assert keyed.delete("/v1/session").status_code == 204
    assert_problem(keyed.get("/v1/parks"), 401)


def test_revoking_a_key_ends_its_sessions(keyed: TestClient) -> None:
    """A session made with a key stops working when the key is revoked."""
    key = make_key(keyed, "viewer", "read")
    assert keyed.post("/v1/session", json={"key": key}).status_code == 201
    assert keyed.get("/v1/parks").status_code == 200
    keyed.delete("/v1/keys/viewer", headers=bearer(BOOTSTRAP))
    assert_problem(keyed.get("/v1/parks"), 401)


def test_sign_in_with_a_bad_key_is_401(keyed: TestClient) -> None:
    """A wrong key gets no session and no cookie."""
    refused = keyed.post("/v1/session", json={"key": "psk_not-a-key"})
    assert_problem(refused, 401)
    assert "set-cookie" not in refused.headers


def test_open_api_without_any_key_serves_trusted_hosts_only(
    db_settings: DatabaseSettings, clean_db: str
) -> None:
    """With no key configured every /v1 call works from localhost; another Host gets 400."""
    del clean_db
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as client:
        assert client.get("/v1/parks").status_code == 200
        assert client.get("/v1/session").json()["keys_required"] is False
        assert client.get("/v1/parks", headers={"Host": "localhost:8000"}).status_code == 200
        rebound = client.get("/v1/parks", headers={"Host": "evil.example:8000"})
        assert_problem(rebound, 400)
        assert rebound.json()["title"] == "Untrusted host"
        assert_problem(client.get("/healthz", headers={"Host": "evil.example"}), 400)
        # Once a key exists, the API is closed.
        made = client.post("/v1/keys", json={"name": "first", "scope": "admin"})
        assert made.status_code == 201
        assert_problem(client.get("/v1/parks"), 401)


def test_trusted_hosts_are_configurable(db_settings: DatabaseSettings, clean_db: str) -> None:
    """PARKSENSE_API_TRUSTED_HOSTS replaces the defaults; *.domain matches subdomains."""
    del clean_db
    settings = ApiSettings(trusted_hosts="api.example.com, *.park.example")
    app = create_app(settings, db_settings)
    with TestClient(app, base_url="http://api.example.com") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"Host": "a.park.example"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "127.0.0.1"}).status_code == 400


def test_cors_is_off_unless_configured(db_settings: DatabaseSettings, clean_db: str) -> None:
    """No CORS headers by default; a configured origin gets them."""
    del clean_db
    preflight = {
        "Origin": "https://grafana.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as client:
        answer = client.options("/v1/parks", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    settings = ApiSettings(cors_origins="https://grafana.example")
    with TestClient(create_app(settings, db_settings), base_url=LOCAL_URL) as client:
        answer = client.options("/v1/parks", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://grafana.example"


def test_cli_keys_create_list_revoke(
    keyed: TestClient,
    db_settings: DatabaseSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`parksense keys create` prints the API's JSON; the key works; list and revoke follow."""
    import orjson  # noqa: PLC0415 - only this test parses CLI output

    for name, value in settings_env(db_settings).items():
        monkeypatch.setenv(name, value)
    assert cli_main(["keys", "create", "--scope", "write", "--name", "cli-made"]) == 0
    created = orjson.loads(capsys.readouterr().out)
    assert set(created) == {"name", "scope", "key"}
    assert created["scope"] == "write"
    assert keyed.get("/v1/parks", headers=bearer(created["key"])).status_code == 200

    assert cli_main(["keys", "list"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed["data"]] == ["cli-made"]
    assert created["key"] not in str(listed)

    assert cli_main(["keys", "create", "--scope", "read", "--name", "cli-made"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert cli_main(["keys", "revoke", "cli-made"]) == 0
    assert_problem(keyed.get("/v1/parks", headers=bearer(created["key"])), 401)
    assert cli_main(["keys", "revoke", "cli-made"]) == 1
