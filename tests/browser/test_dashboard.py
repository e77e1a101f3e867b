"""The dashboard in headless Chromium against the real stack: MQTT → ingest → database → API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from services.stack.postgres import PostgresCluster
from tests.harness.browser import WAIT_MS, open_park
from tests.harness.live import LiveStack, now_ts, sample, send

pytestmark = pytest.mark.browser


def test_operating_rate_tile_follows_a_published_change_without_reload(
    page: Page, stack: LiveStack, artifacts: Path
) -> None:
    """A second line starting to run takes the tile from 50 % to 100 % in the open page."""
    open_park(page, stack)
    tile = page.locator('.tile[data-signal="operating_rate"]')
    expect(tile).to_have_attribute("data-value", "0.5", timeout=WAIT_MS)
    expect(tile.locator(".num")).to_have_text("50.0")
    expect(tile).to_contain_text("1 of 2 factories running")

    send(stack.publisher, [(stack.park.topic("l2"), sample({"state": "running"}))])

    expect(tile).to_have_attribute("data-value", "1", timeout=WAIT_MS)
    expect(tile.locator(".num")).to_have_text("100.0")
    expect(tile).to_contain_text("2 of 2 factories running")
    assert page.evaluate("window.__sameDocument") is True
    row = page.locator(f'tr[data-factory="{stack.park.factory("f2")}"]')
    expect(row).to_contain_text("Running", timeout=WAIT_MS)
    page.screenshot(path=artifacts / "dashboard-park.png", full_page=True)


def test_fault_adds_the_device_to_the_alarm_list(
    page: Page, stack: LiveStack, artifacts: Path
) -> None:
    """A machine reporting ``fault`` appears in the alarm list with its reason."""
    open_park(page, stack)
    alarms = page.locator('[data-role="alarms"]')
    expect(alarms).to_contain_text("No device in alarm")
    mach = stack.park.device("mach")

    send(stack.publisher, [(stack.park.topic("mach"), sample({"state": "fault"}))])

    row = alarms.locator(f'tr[data-device="{mach}"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("state fault")
    expect(row).to_contain_text("Alpha Precision")
    expect(page.locator('[data-role="alarm-count"]')).to_have_text("1")
    expect(page.locator('.tile[data-signal="alarm_rate"]')).to_contain_text("1 of 5")
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=artifacts / "dashboard-alarm.png", full_page=True)


def test_offline_device_is_listed_with_its_reason_and_how_long(
    page: Page, stack: LiveStack
) -> None:
    """A device's last will puts it in the offline list, with a running duration."""
    open_park(page, stack)
    env = stack.park.device("env")
    status = {"online": False, "ts": now_ts()}
    send(stack.publisher, [(stack.park.topic("env", "status"), status)])
    row = page.locator(f'[data-role="offline"] tr[data-device="{env}"]')
    expect(row).to_contain_text("disconnected (last will)", timeout=WAIT_MS)
    # Seconds or minutes, however long the wait took.
    expect(row.locator("[data-since]")).to_have_text(re.compile(r"^\d+(s|m)$"))


def test_a_dropped_stream_is_shown_and_the_page_recovers_by_itself(
    page: Page, stack: LiveStack
) -> None:
    """Stopping the API turns the status to disconnected; a restarted API makes it live again."""
    open_park(page, stack)
    stack.api.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "disconnected", timeout=WAIT_MS)
    banner = page.locator('[data-role="banner"]')
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Reconnecting")
    stack.api.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(banner).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True


def test_language_toggle_switches_to_chinese_and_back(page: Page, stack: LiveStack) -> None:
    """The toggle relabels the page in Chinese (开工率) and back, keeping the live values."""
    open_park(page, stack)
    tile = page.locator('.tile[data-signal="operating_rate"]')
    expect(tile).to_contain_text("Operating rate")
    page.locator("#lang").click()
    expect(tile).to_contain_text("开工率")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator('[data-role="alarms"]')).to_contain_text("当前无告警设备")
    expect(tile.locator(".num")).to_have_text("50.0")
    page.locator("#lang").click()
    expect(tile).to_contain_text("Operating rate")


def test_overview_lists_the_park_and_opens_its_page(
    page: Page, stack: LiveStack, artifacts: Path
) -> None:
    """The overview shows the park with its health index and links to the park's page."""
    page.goto(stack.api.url + "/")
    card = page.locator(f'.park-card[data-park="{stack.park.park}"]')
    expect(card).to_contain_text("Riverside Test Park", timeout=WAIT_MS)
    score = card.locator('[data-signal="health_index"]')
    expect(score).not_to_have_attribute("data-value", "", timeout=WAIT_MS)
    health = float(score.get_attribute("data-value") or "nan")
    assert 0 <= health <= 100
    page.screenshot(path=artifacts / "dashboard-overview.png", full_page=True)
    card.click()
    expect(page.locator("h1")).to_have_text("Riverside Test Park")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def test_phone_width_fits_without_sideways_scrolling(
    browser: Browser, stack: LiveStack, artifacts: Path
) -> None:
    """At 390 px the park page needs no horizontal scrolling and still shows every tile."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, locale="zh-CN", device_scale_factor=2
    )
    try:
        phone = context.new_page()
        phone.goto(f"{stack.api.url}/#/parks/{stack.park.park}")
        expect(phone.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        expect(phone.locator('.tile[data-signal="operating_rate"]')).to_contain_text("开工率")
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        for tile in phone.locator(".tile").all():
            box = tile.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 390
        phone.screenshot(path=artifacts / "dashboard-phone.png", full_page=True)
    finally:
        context.close()


def test_database_outage_shows_stale_and_clears_when_it_is_back(
    page: Page, stack: LiveStack, pg_cluster: PostgresCluster
) -> None:
    """With PostgreSQL down the page says its figures are stale; it recovers by itself."""
    open_park(page, stack)
    conn = page.locator("#conn")
    banner = page.locator('[data-role="banner"]')
    pg_cluster.stop(mode="immediate")
    try:
        expect(conn).to_have_attribute("data-state", "stale", timeout=WAIT_MS)
        expect(banner).to_contain_text("cannot reach the database")
    finally:
        pg_cluster.start()
    expect(conn).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(banner).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True
