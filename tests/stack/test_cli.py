"""The parksense command: fleet subcommands, one-line errors, exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import psycopg
import pytest

from schemas.fleet import parse_fleet
from services.cli import _share_local_db_password, main
from services.config import BrokerAuthSettings, DatabaseSettings
from services.stack.mosquitto import MosquittoBroker
from services.stack.stack import settings_env
from services.stack.state_secrets import db_password_file, write_secret
from tests.harness.mqtt_client import Client


@pytest.fixture
def cli_env(
    db_settings: DatabaseSettings,
    broker_auth: BrokerAuthSettings,
    mosquitto: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Point the command at the test database and broker (never at a local stack)."""
    for name, value in settings_env(db_settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PARKSENSE_BROKER_AUTH_DIR", str(broker_auth.auth_dir))
    monkeypatch.setenv("PARKSENSE_BROKER_PID_FILE", str(broker_auth.pid_file))
    monkeypatch.setenv("PARKSENSE_MQTT_HOST", mosquitto.host)
    monkeypatch.setenv("PARKSENSE_MQTT_PORT", str(mosquitto.port))


def test_fleet_demo_prints_a_valid_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    """`fleet demo` prints YAML that parses as a fleet of the requested size."""
    assert main(["fleet", "demo", "--parks", "2", "--factories-per-park", "3"]) == 0
    fleet = parse_fleet(capsys.readouterr().out)
    assert len(fleet.parks) == 2
    assert all(len(park.factories) == 3 for park in fleet.parks)


def test_fleet_load_loads_into_the_configured_database(
    clean_db: str, cli_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fleet load FILE` loads the registry and prints the counts."""
    del cli_env  # Requested for the environment.
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


def test_credentials_issue_prints_a_working_credential_and_revoke_ends_it(
    clean_db: str,
    cli_env: None,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`credentials issue --factory` prints the API's JSON; the broker takes it at once."""
    del cli_env, clean_db  # Requested for the environment and an empty registry.
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "parks:\n  - id: cli-park\n    factories:\n      - id: cli-f1\n        devices:\n"
        "          - {id: cli-d1, type: env_sensor}\n",
        encoding="utf-8",
    )
    assert main(["fleet", "load", str(fleet_file)]) == 0
    capsys.readouterr()
    assert main(["credentials", "issue", "--factory", "cli-f1"]) == 0
    issued = orjson.loads(capsys.readouterr().out)
    assert set(issued) == {"username", "password", "client_id_prefix", "topics"}
    assert "parksense/v1/cli-park/cli-f1/cli-d1/telemetry" in issued["topics"]
    client = Client(mosquitto.host, mosquitto.port, issued["username"], issued["password"])
    try:
        assert client.connect()
        assert main(["credentials", "revoke", "--factory", "cli-f1"]) == 0
        assert client.disconnected.wait(5)
    finally:
        client.close()
    assert main(["credentials", "revoke", "--factory", "cli-f1"]) == 1
    assert main(["credentials", "issue", "--device", "nobody"]) == 1
    assert "not registered" in capsys.readouterr().err


@pytest.fixture
def local_db_env(
    db_settings: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The test database's address without a password, and an empty state folder; no pgpass."""
    for name, value in settings_env(db_settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PARKSENSE_DB_PASSWORD")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    state_dir = tmp_path / "state"
    monkeypatch.setenv("PARKSENSE_STATE_DIR", str(state_dir))
    return state_dir


def test_commands_use_the_state_folders_database_password(
    local_db_env: Path, db_settings: DatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PARKSENSE_DB_PASSWORD, a command connects with <state>/secrets/db.password."""
    assert main(["migrate"]) == 1  # No password anywhere: the database refuses.
    assert "cannot reach the database" in capsys.readouterr().err
    assert db_settings.password is not None
    password = db_settings.password.get_secret_value()
    write_secret(db_password_file(local_db_env), password)
    assert main(["migrate"]) == 0
    assert "The schema is current." in capsys.readouterr().out
    _share_local_db_password()  # What a foreground service (`parksense api`) is given.
    assert os.environ["PARKSENSE_DB_PASSWORD"] == password
