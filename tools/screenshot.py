"""Take a screenshot of a running dashboard with the system's Chromium (for the README).

``python -m tools.screenshot --url http://127.0.0.1:8000/ --park hebi-tech
--out docs/img/dashboard.png`` opens the page, waits until its data is live and the charts
are drawn, and saves a PNG. Playwright drives Debian's ``chromium``; no browser is
downloaded (``deploy/install-system.sh --browser`` installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The system's Chromium, in the order they are looked for (PARKSENSE_CHROMIUM first).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page is ready when the stream (park page) or the refresh (overview) has delivered.
_READY_JS = """() => {
  const state = document.getElementById("conn")?.dataset.state;
  if (state !== "live" && state !== "polling") return false;
  const charts = document.querySelectorAll(".chart-body");
  return [...charts].every((c) => c.querySelector("svg") && !c.textContent.includes("…"));
}"""
_DEFAULT_URL = "http://127.0.0.1:8000/"
# With API keys on, the screenshot signs in with the key in this variable (never an argument,
# which would show in the process list).
KEY_VARIABLE = "PARKSENSE_SCREENSHOT_KEY"


def find_chromium() -> str | None:
    """Return the path of the system's Chromium, or None."""
    override = os.environ.get("PARKSENSE_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def find_cjk_font() -> str | None:
    """Return the family of an installed font with Chinese glyphs (fontconfig), or None.

    Without one, Chromium draws every 中文 label as empty boxes; Debian's ``fonts-noto-cjk``
    (``deploy/install-system.sh --browser``) has them.
    """
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    found = subprocess.run(
        [fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False, timeout=30
    )
    families = [line.split(",")[0].strip() for line in found.stdout.splitlines() if line.strip()]
    return min(families) if families else None


def page_url(url: str, *, park: str | None, lang: str, chart_range: str | None) -> str:
    """Return the dashboard address: the overview or one park's page, in a language.

    Query parameters already in ``url`` are kept.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["lang"] = lang
    if chart_range is not None:
        query["range"] = chart_range
    fragment = f"/parks/{park}" if park is not None else parts.fragment
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), fragment))


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="parksense screenshot", description="Screenshot a running parksense dashboard."
    )
    parser.add_argument("--url", default=_DEFAULT_URL, help=f"dashboard URL ({_DEFAULT_URL})")
    parser.add_argument("--park", help="open this park's page instead of the overview")
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--width", type=int, default=1440, help="viewport width in CSS pixels")
    parser.add_argument("--height", type=int, default=1000, help="viewport height")
    parser.add_argument("--scale", type=float, default=1.0, help="device pixel ratio")
    parser.add_argument("--lang", choices=["en", "zh"], default="en", help="label language")
    parser.add_argument(
        "--range", dest="chart_range", choices=["1h", "6h", "24h"], help="charts' time range"
    )
    parser.add_argument("--full-page", action="store_true", help="capture the whole page")
    parser.add_argument(
        "--timeout-s", type=float, default=30.0, help="how long to wait for live data"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Save a screenshot of the dashboard; return 0, or 1 with a reason on stderr."""
    args = build_parser().parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        sys.stderr.write("Chromium is not installed: run `deploy/install-system.sh --browser`\n")
        return 1
    if args.lang == "zh" and find_cjk_font() is None:
        sys.stderr.write(
            "No font with Chinese glyphs (labels would be boxes): run "
            "`deploy/install-system.sh --browser`, which installs fonts-noto-cjk\n"
        )
        return 1
    try:
        from playwright.sync_api import Error as PlaywrightError  # noqa: PLC0415 - dev extra
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - dev extra
    except ImportError:
        sys.stderr.write("Playwright is missing: pip install -e '.[dev]'\n")
        return 1
    target = page_url(args.url, park=args.park, lang=args.lang, chart_range=args.chart_range)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(
                viewport={"width": args.width, "height": args.height},
                device_scale_factor=args.scale,
                locale="zh-CN" if args.lang == "zh" else "en-US",
            )
            page = context.new_page()
            key = os.environ.get(KEY_VARIABLE)
            if key:
                # The same sign-in as the dashboard's form: the answer sets the session cookie.
                signed = context.request.post(
                    urlunsplit((*urlsplit(args.url)[:2], "/v1/session", "", "")),
                    data={"key": key},
                )
                if signed.status != HTTPStatus.CREATED:
                    sys.stderr.write(f"sign-in failed with {signed.status}; check {KEY_VARIABLE}\n")
                    return 1
            page.goto(target)
            page.wait_for_function(_READY_JS, timeout=args.timeout_s * 1000)
            # One more update, so sparklines and trends from the history are in.
            page.wait_for_timeout(2500)
            page.screenshot(path=str(args.out), full_page=args.full_page)
        except PlaywrightError as exc:
            sys.stderr.write(f"screenshot of {target} failed: {exc}\n")
            return 1
        finally:
            browser.close()
    sys.stdout.write(f"{args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
