"""Planned time in the dashboard: a factory outside its shift reads "off shift", not idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from schemas.fleet import parse_fleet
from services.storage.fleet_store import load_fleet
from tests.harness.browser import open_park
from tests.harness.live import LIVE_TIMEOUT_S, LiveStack

pytestmark = pytest.mark.browser

WAIT_MS = LIVE_TIMEOUT_S * 1000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def off_shift_calendar() -> str:
    """A calendar whose only shift is one minute, six hours from now in Shanghai."""
    later = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")) + timedelta(hours=6)
    end = later + timedelta(minutes=1)
    return (
        f"        calendar: {{shifts: [{{days: [{WEEKDAYS[later.weekday()]}],"
        f' start: "{later:%H:%M}", end: "{end:%H:%M}"}}]}}\n'
    )


def test_factory_outside_its_shift_reads_off_shift(
    page: Page, stack: LiveStack, artifacts: Path
) -> None:
    """f2 off shift: its row says so in both languages and the rate counts f1 alone."""
    open_park(page, stack)
    f2 = stack.park.factory("f2")
    row = page.locator(f'tr[data-factory="{f2}"]')
    expect(row).to_contain_text("Not running", timeout=WAIT_MS)
    tile = page.locator('.tile[data-signal="operating_rate"]')
    expect(tile).to_have_attribute("data-value", "0.5", timeout=WAIT_MS)

    text = stack.park.yaml().replace(
        "        name: Beta Foods\n", "        name: Beta Foods\n" + off_shift_calendar()
    )
    load_fleet(stack.conninfo, parse_fleet(text))

    expect(row.locator('[data-status="off_shift"]')).to_have_text("Off shift", timeout=WAIT_MS)
    expect(row).not_to_contain_text("Not running")
    # Only f1 is scheduled, and it runs.
    expect(tile).to_have_attribute("data-value", "1", timeout=WAIT_MS)
    expect(tile).to_contain_text("1 of 1 scheduled factories running")
    page.screenshot(path=artifacts / "dashboard-off-shift.png", full_page=True)

    page.locator("#lang").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(row.locator('[data-status="off_shift"]')).to_have_text("休班", timeout=WAIT_MS)
    expect(tile).to_contain_text("1 家排班工厂中 1 家开工")
    page.locator("#lang").click()

    # The charts shade the history's off-shift time: f2 is off shift in every bucket.
    page.reload()
    shade = page.locator('[data-chart="operating"] rect.offshift')
    expect(shade.first).to_be_attached(timeout=WAIT_MS)
    assert shade.count() > 1
    page.screenshot(path=artifacts / "dashboard-off-shift-charts.png", full_page=True)
