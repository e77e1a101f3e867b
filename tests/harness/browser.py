"""Browser harness: opening the dashboard on a park and waiting for its stream."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.harness.live import LIVE_TIMEOUT_S, LiveStack

WAIT_MS = LIVE_TIMEOUT_S * 1000


def open_park(page: Page, stack: LiveStack) -> None:
    """Open the park's page and wait until the stream is live."""
    page.goto(f"{stack.api.url}/#/parks/{stack.park.park}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    # A marker that a reload would wipe out.
    page.evaluate("window.__sameDocument = true")
