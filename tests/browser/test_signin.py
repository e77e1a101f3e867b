"""The dashboard with API keys on: sign in with a key, see live data, sign out; no secret leaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from services.config import BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from tests.harness.environment import PLATFORM_PASSWORDS
from tests.harness.live import LIVE_TIMEOUT_S, LiveStack, live_stack, sample, send
from tests.harness.mqtt_client import NOT_AUTHORIZED, Client

pytestmark = pytest.mark.browser

WAIT_MS = LIVE_TIMEOUT_S * 1000
BOOTSTRAP = "psk_bootstrap-admin-key-of-the-browser-test-0123456789"


@pytest.fixture
def keyed_stack(
    clean_db: str,
    db_settings: DatabaseSettings,
    mqtt_settings: MqttSettings,
    broker_auth: BrokerAuthSettings,
    tmp_path: Path,
) -> Iterator[LiveStack]:
    """The live stack with keys on, the API's access log written, issuing MQTT credentials."""
    broker_env = {
        "PARKSENSE_BROKER_AUTH_DIR": str(broker_auth.auth_dir),
        "PARKSENSE_BROKER_PID_FILE": str(broker_auth.pid_file),
        "PARKSENSE_MQTT_HOST": mqtt_settings.host,
        "PARKSENSE_MQTT_PORT": str(mqtt_settings.port),
    }
    with live_stack(
        clean_db,
        db_settings,
        mqtt_settings,
        tmp_path,
        admin_key=BOOTSTRAP,
        api_log_level="info",
        api_env=broker_env,
    ) as running:
        yield running


def device_credential(stack: LiveStack, device_id: str) -> dict[str, str]:
    """Issue a device's MQTT credential over HTTP with the bootstrap key."""
    import http.client  # noqa: PLC0415 - only this helper posts

    import orjson  # noqa: PLC0415 - same

    conn = http.client.HTTPConnection(stack.api.host, stack.api.port, timeout=30)
    try:
        conn.request("POST", f"/v1/devices/{device_id}/credentials", headers=stack.auth)
        response = conn.getresponse()
        body: dict[str, str] = orjson.loads(response.read())
    finally:
        conn.close()
    assert response.status == 201, body
    return body


def make_key(stack: LiveStack, name: str, scope: str) -> str:
    """Create a key over HTTP with the bootstrap key."""
    import http.client  # noqa: PLC0415 - only this helper posts

    import orjson  # noqa: PLC0415 - same

    conn = http.client.HTTPConnection(stack.api.host, stack.api.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/keys",
            body=orjson.dumps({"name": name, "scope": scope}),
            headers={"Content-Type": "application/json", **stack.auth},
        )
        response = conn.getresponse()
        body = orjson.loads(response.read())
    finally:
        conn.close()
    assert response.status == 201, body
    key: str = body["key"]
    return key


def test_dashboard_signs_in_with_a_key_and_follows_live_data(
    browser: Browser,
    keyed_stack: LiveStack,
    artifacts: Path,
    pg_cluster: PostgresCluster,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
) -> None:
    """Sign in with a read key, see a published change live, sign out; no log holds a secret."""
    stack = keyed_stack
    read_key = make_key(stack, "wall-screen", "read")
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    try:
        page.goto(f"{stack.api.url}/#/parks/{stack.park.park}")
        form = page.locator('[data-role="signin"]')
        expect(form).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=artifacts / "dashboard-signin.png")

        form.locator("input").fill("psk_not-a-key-at-all")
        form.locator("input").press("Enter")
        expect(page.locator('[data-role="signin-error"]')).to_contain_text("not valid")

        form.locator("input").fill(read_key)
        form.locator("button").click()
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        tile = page.locator('.tile[data-signal="operating_rate"]')
        expect(tile).to_have_attribute("data-value", "0.5", timeout=WAIT_MS)
        send(stack.publisher, [(stack.park.topic("l2"), sample({"state": "running"}))])
        expect(tile).to_have_attribute("data-value", "1", timeout=WAIT_MS)
        expect(page.locator("#signout")).to_be_visible()
        page.screenshot(path=artifacts / "dashboard-signed-in.png", full_page=True)

        [cookie] = context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
            "parksense_session",
            True,
            "Strict",
        )
        token = cookie["value"]
        assert page.evaluate("document.cookie") == ""
        assert page.evaluate("JSON.stringify(window.localStorage)").find(read_key) == -1

        page.locator("#lang").click()
        expect(page.locator("#signout")).to_have_text("退出登录")
        page.locator("#signout").click()
        expect(form).to_be_visible(timeout=WAIT_MS)
        expect(page.locator('[data-role="signin-error"]')).to_contain_text("已退出登录")
        page.screenshot(path=artifacts / "dashboard-signin-zh.png")
        status, _ = stack.api.get("/v1/parks", {"Cookie": f"parksense_session={token}"})
        assert status == 401
    finally:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"

    # Every kind of credential, including a key wrongly put in a query string, a device's
    # MQTT credential (used, and refused once with a wrong password) and the platform's own.
    assert stack.api.get("/v1/parks", {"X-API-Key": read_key})[0] == 200
    assert stack.api.get(f"/v1/parks?api_key={read_key}")[0] == 401
    secrets = [BOOTSTRAP, read_key, token, use_a_device_credential(stack, mosquitto)]
    secrets += PLATFORM_PASSWORDS.values()
    assert not any(secret in url for secret in secrets for url in urls)
    logs = [stack.api.log_path, pg_cluster.log_file, mosquitto.log_file, *tmp_path.glob("*.log")]
    assert_no_secret_in_logs(stack.api.log_path, logs, secrets)


def use_a_device_credential(stack: LiveStack, mosquitto: MosquittoBroker) -> str:
    """Issue a device credential, refuse a wrong password, publish with it; its password."""
    credential = device_credential(stack, stack.park.device("meter"))
    wrong = Client(mosquitto.host, mosquitto.port, credential["username"], "x" * 43)
    assert not wrong.connect()
    wrong.close()
    client = Client(mosquitto.host, mosquitto.port, credential["username"], credential["password"])
    try:
        assert client.connect()
        assert client.publish(stack.park.topic("meter"), b"{}") < NOT_AUTHORIZED
    finally:
        client.close()
    return credential["password"]


def assert_no_secret_in_logs(api_log: Path, logs: list[Path], secrets: list[str]) -> None:
    """The access log was written (so the check means something) and no log holds a secret."""
    text = api_log.read_text()
    assert '"GET /v1/parks HTTP/1.1" 200' in text
    assert "api_key=REDACTED" in text
    for log in logs:
        content = log.read_text(errors="replace")
        # The random part alone, so a log that cut the prefix would be caught too.
        leaked = [s[:8] for s in secrets if s[4:] in content]
        assert leaked == [], f"{log} holds a secret starting {leaked}"
