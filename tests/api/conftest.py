"""Fixtures for API tests: the app over the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import ApiSettings, DatabaseSettings
from tests.harness.environment import LOCAL_URL


@pytest.fixture
def api(db_settings: DatabaseSettings, clean_db: str) -> Iterator[TestClient]:
    """The API over a freshly emptied test database."""
    del clean_db  # Requested for the truncation.
    with TestClient(create_app(ApiSettings(), db_settings), base_url=LOCAL_URL) as client:
        yield client
