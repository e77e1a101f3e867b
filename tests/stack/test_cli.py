"""The parksense command: fleet subcommands, one-line errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from schemas.fleet import parse_fleet
from services.cli import main
from services.config import DatabaseSettings


def test_fleet_demo_prints_a_valid_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    """`fleet demo` prints YAML that parses as a fleet of the requested size."""
    assert main(["fleet", "demo", "--parks", "2", "--factories-per-park", "3"]) == 0
    fleet = parse_fleet(capsys.readouterr().out)
    assert len(fleet.parks) == 2
    assert all(len(park.factories) == 3 for park in fleet.parks)


def test_fleet_load_loads_into_the_configured_database(
    clean_db: str,
    db_settings: DatabaseSettings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fleet load FILE` loads the registry and prints the counts."""
    for name in ("host", "port", "name", "user"):
        monkeypatch.setenv(f"PARKSENSE_DB_{name.upper()}", str(getattr(db_settings, name)))
    assert main(["fleet", "demo", "--parks", "1", "--factories-per-park", "2"]) == 0
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(capsys.readouterr().out, encoding="utf-8")

    assert main(["fleet", "load", str(fleet_file)]) == 0
    out = capsys.readouterr().out
    assert "1 parks, 2 factories" in out
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM factories").fetchone() == (2,)


def test_fleet_load_refuses_an_invalid_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid fleet file fails with exit code 1 and a one-line reason, no traceback."""
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("parks:\n  - id: Bad Id\n", encoding="utf-8")
    assert main(["fleet", "load", str(fleet_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("parksense: error: invalid fleet file")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_fleet_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A fleet file that does not exist is reported by name."""
    assert main(["fleet", "load", "/nonexistent/fleet.yaml"]) == 1
    assert "cannot read fleet file /nonexistent/fleet.yaml" in capsys.readouterr().err


def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid PARKSENSE_* value is reported with the variable's name."""
    monkeypatch.setenv("PARKSENSE_MQTT_PORT", "not-a-port")
    assert main(["status"]) == 1
    assert "PARKSENSE_MQTT_PORT" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    """An unknown subcommand exits with argparse's usage status 2."""
    with pytest.raises(SystemExit) as exc_info:
        main(["no-such-command"])
    assert exc_info.value.code == 2
