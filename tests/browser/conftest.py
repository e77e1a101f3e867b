"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and a live stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from services.config import DatabaseSettings, MqttSettings
from tests.harness.ingest import REPO
from tests.harness.live import LiveStack, live_stack
from tools.screenshot import CHROMIUM_ARGS, find_chromium, find_cjk_font

ARTIFACTS = REPO / "test-artifacts"


# Package scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and later tests call asyncio.run().
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the browser tests; they fail (not skip) when it is missing."""
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "Chromium is not installed: run `deploy/install-system.sh --browser`"
            " (or `make test`, which does) to install Debian's chromium and chromium-driver",
            pytrace=False,
        )
    if find_cjk_font() is None:
        pytest.fail(
            "No font with Chinese glyphs: run `deploy/install-system.sh --browser`"
            " (or `make test`, which does) to install Debian's fonts-noto-cjk",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def stack(
    clean_db: str, db_settings: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path
) -> Iterator[LiveStack]:
    """A park reporting through real MQTT and ingest, and the API serving the dashboard."""
    with live_stack(clean_db, db_settings, mqtt_settings, tmp_path) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh desktop-sized page in English; uncaught script errors fail the test."""
    context = browser.new_context(
        viewport={"width": 1440, "height": 1000}, locale="en-US", device_scale_factor=1
    )
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The git-ignored folder for screenshots of the test run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
