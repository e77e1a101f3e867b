"""The dashboard in Chinese: glyphs that really render, and the fleet's Chinese names."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from schemas.fleet import parse_fleet
from services.storage.fleet_store import load_fleet
from tests.harness.live import LIVE_TIMEOUT_S, LiveStack

pytestmark = pytest.mark.browser

WAIT_MS = LIVE_TIMEOUT_S * 1000

# Draws each character of a label in the label's own font on a canvas and returns the
# images, with the image of a code point no font has (U+10FFFD, private use): without a
# Chinese font every Han character is drawn as that same empty box ("tofu").
_GLYPHS_JS = """(selector) => {
  const el = document.querySelector(selector);
  const style = getComputedStyle(el);
  const draw = (ch) => {
    const canvas = document.createElement("canvas");
    canvas.width = 64;
    canvas.height = 64;
    const g = canvas.getContext("2d");
    g.font = `40px ${style.fontFamily}`;
    g.fillText(ch, 8, 48);
    const data = g.getImageData(0, 0, 64, 64).data;
    let ink = 0;
    for (let i = 3; i < data.length; i += 4) ink += data[i] > 0 ? 1 : 0;
    return { image: canvas.toDataURL(), ink };
  };
  return { glyphs: [...el.textContent.trim()].map(draw), tofu: draw("\\u{10FFFD}") };
}"""


def open_park_in_chinese(page: Page, stack: LiveStack) -> None:
    """Open the park's page with ``?lang=zh`` and wait until the stream is live."""
    page.goto(f"{stack.api.url}/?lang=zh#/parks/{stack.park.park}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def test_chinese_labels_are_drawn_with_real_glyphs_not_boxes(page: Page, stack: LiveStack) -> None:
    """Each character of the 开工率 tile label has its own inked glyph, unlike a missing one."""
    open_park_in_chinese(page, stack)
    label = '.tile[data-signal="operating_rate"] .tile-label span'
    expect(page.locator(label)).to_have_text("开工率")
    drawn = page.evaluate(_GLYPHS_JS, label)
    images = [glyph["image"] for glyph in drawn["glyphs"]]
    assert len(images) == 3
    assert all(glyph["ink"] > 0 for glyph in drawn["glyphs"]), "a character drew nothing"
    assert len(set(images)) == 3, "the characters share one glyph: boxes, no Chinese font"
    assert drawn["tofu"]["image"] not in images, "a character is drawn as the missing glyph"


def test_chinese_names_from_the_fleet_are_shown_in_chinese(page: Page, stack: LiveStack) -> None:
    """In Chinese the page shows ``name_zh`` (else ``name``); in English it shows ``name``."""
    text = (
        stack.park.yaml()
        .replace(
            "name: Riverside Test Park", "name: Riverside Test Park\n    name_zh: 河畔测试园区"
        )
        .replace("name: Alpha Precision", "name: Alpha Precision\n        name_zh: 阿尔法精密")
    )
    load_fleet(stack.conninfo, parse_fleet(text))
    open_park_in_chinese(page, stack)
    expect(page.locator("h1")).to_have_text("河畔测试园区")
    table = page.locator('[data-role="factories"]')
    expect(table.locator(f'tr[data-factory="{stack.park.factory("f1")}"]')).to_contain_text(
        "阿尔法精密"
    )
    # No Chinese name: the English one.
    expect(table.locator(f'tr[data-factory="{stack.park.factory("f2")}"]')).to_contain_text(
        "Beta Foods"
    )
    page.locator("#lang").click()
    expect(page.locator("h1")).to_have_text("Riverside Test Park")
    expect(table.locator(f'tr[data-factory="{stack.park.factory("f1")}"]')).to_contain_text(
        "Alpha Precision"
    )
    page.locator("#lang").click()
    page.goto(f"{stack.api.url}/?lang=zh#/")  # the same document: the hash changes only
    card = page.locator(f'.park-card[data-park="{stack.park.park}"]')
    expect(card).to_contain_text("河畔测试园区", timeout=WAIT_MS)
