"""The dashboard's assets are served by the API itself, with no outside address in them."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.routes.dashboard import STATIC_DIR
from services.config import ApiSettings, DatabaseSettings
from tests.harness.environment import LOCAL_URL

# Any absolute URL; the only ones allowed are XML namespaces, which browsers never fetch.
_URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
_NAMESPACES = {"//www.w3.org"}


@pytest.fixture
def client(db_settings: DatabaseSettings) -> Iterator[TestClient]:
    """The API (no request here touches the database)."""
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as api:
        yield api


def test_root_serves_the_dashboard_page(client: TestClient) -> None:
    """GET / is the dashboard's HTML, revalidated on every load."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/app.js">' in response.text


def test_every_asset_the_page_loads_is_served_with_its_type(client: TestClient) -> None:
    """The scripts, the stylesheet and the icon referenced by the pages are all served."""
    page = client.get("/").text
    referenced = set(re.findall(r"""/static/([\w./-]+)""", page))
    # Follow the modules' imports from the entry module, transitively.
    pending = ["app.js"]
    while pending:
        script = client.get(f"/static/{pending.pop()}").text
        imported = {m + ".js" for m in re.findall(r"""from "\./([\w-]+)\.js\"""", script)}
        pending += sorted(imported - referenced)
        referenced |= imported
    assert {"app.js", "style.css", "favicon.svg", "charts.js", "i18n.js"} <= referenced
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for name in sorted(referenced):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(types[name[name.rindex(".") :]])


def test_no_asset_refers_to_an_outside_address() -> None:
    """No CDN and no outside network: assets name no host but XML namespaces."""
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            hosts = set(_URL.findall(path.read_text(encoding="utf-8")))
            outside = {h for h in hosts if not any(h.endswith(ns) for ns in _NAMESPACES)}
            assert outside == set(), f"{path.name} refers to {outside}"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../routes/dashboard.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/missing.js",
        "/static/",
        "/static/index.py",
    ],
)
def test_paths_outside_the_assets_are_not_found(client: TestClient, path: str) -> None:
    """Traversal and unknown files answer 404 problem+json, never a file outside the folder."""
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
