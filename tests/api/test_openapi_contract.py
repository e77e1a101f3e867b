"""The OpenAPI document is exact to the behaviour: schemathesis finds nothing against the stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schemas.fleet import parse_fleet
from services.config import DatabaseSettings
from services.storage.fleet_store import load_fleet
from tests.harness.api import FLEET
from tests.harness.ingest import REPO
from tests.harness.live import ApiServer

ADMIN_KEY = "psk_schemathesis-admin-key-0123456789abcdef"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Examples per operation and phase: enough to reach every documented status, small enough
# for `make test` (about half a minute).
MAX_EXAMPLES = 25


def test_schemathesis_finds_no_failure(
    db_settings: DatabaseSettings, clean_db: str, tmp_path: Path
) -> None:
    """`schemathesis run --checks all` against the real API over a loaded fleet passes."""
    # The fleet gives the device and park routes real ids (its examples name them).
    load_fleet(clean_db, parse_fleet(FLEET))
    api = ApiServer(db_settings, tmp_path, {"PARKSENSE_API_API_KEYS": ADMIN_KEY})
    api.start()
    try:
        result = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
                "run", f"{api.url}/openapi.json",
                "--checks", "all",
                "--header", f"Authorization: Bearer {ADMIN_KEY}",
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", "1",
                # The live stream never ends (an SSE response), and a random fleet would
                # replace the one whose ids the other operations use; both have own tests.
                "--exclude-path-regex", r"/stream$|^/v1/fleet$",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
            check=False,
        )  # fmt: skip
    finally:
        api.stop()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "No issues found" in report or " passed" in report, report[-2000:]
