"""The state folder's secrets: private files, and the one rule for the local DB password."""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import SecretStr

from services.config import DatabaseSettings
from services.stack.state_secrets import (
    db_password_file,
    local_database,
    new_db_password,
    read_secret,
    write_secret,
)


def test_write_secret_makes_a_private_file_in_a_private_folder(tmp_path: Path) -> None:
    """A new secret is 0600 in a new 0700 folder; an existing looser file is made 0600."""
    path = db_password_file(tmp_path / "state")
    write_secret(path, "first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)
    write_secret(path, "second")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == SecretStr("second")


def test_explicit_password_wins_over_the_state_secret(tmp_path: Path) -> None:
    """PARKSENSE_DB_PASSWORD, when given, is used even though the state folder has a secret."""
    write_secret(db_password_file(tmp_path), "from-the-state")
    db = DatabaseSettings(password=SecretStr("explicit"))
    resolved = local_database(tmp_path, db)
    assert resolved.password == SecretStr("explicit")


def test_state_secret_fills_a_missing_password(tmp_path: Path) -> None:
    """Without an explicit password, the state folder's secret reaches the connection string."""
    password = new_db_password()
    write_secret(db_password_file(tmp_path), password)
    resolved = local_database(tmp_path, DatabaseSettings(password=None))
    assert resolved.password == SecretStr(password)
    assert f"password={password}" in resolved.conninfo()


def test_no_secret_leaves_libpq_defaults(tmp_path: Path) -> None:
    """Without either, no password is put in the connection string (PGPASSWORD, .pgpass apply)."""
    resolved = local_database(tmp_path, DatabaseSettings(password=None))
    assert resolved.password is None
    assert "password" not in resolved.conninfo()


def test_conninfo_quotes_a_password_with_spaces_and_quotes() -> None:
    """An external database's password with spaces or quotes stays one libpq value."""
    db = DatabaseSettings(password=SecretStr("it's a pass"))
    assert "password='it\\'s a pass'" in db.conninfo()


def test_new_passwords_are_long_random_and_need_no_quoting() -> None:
    """A new database password has 256 random bits in URL-safe characters."""
    first, second = new_db_password(), new_db_password()
    assert first != second
    assert len(first) >= 43
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
