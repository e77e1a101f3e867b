"""Secrets of the local stack kept in its state folder, and the one rule for its DB password.

Each secret is one file under ``<state>/secrets`` (folder 0700, file 0600, readable by the
user who runs the stack only): the MQTT passwords of the platform roles and the password of
the local PostgreSQL's superuser (``db.password``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from services.config import DatabaseSettings

SECRETS_DIR = "secrets"
DB_PASSWORD_FILE = "db.password"  # noqa: S105 - a file name, no secret
# Bytes of randomness in a new database password: 32 bytes (256 bits), URL-safe text, so it
# needs no quoting in a libpq connection string, a URL or a pgpass line.
DB_PASSWORD_BYTES = 32


def secrets_dir(state_dir: Path) -> Path:
    """Return the folder of a state folder's secrets."""
    return state_dir.absolute() / SECRETS_DIR


def db_password_file(state_dir: Path) -> Path:
    """Return the file holding the local PostgreSQL superuser's password."""
    return secrets_dir(state_dir) / DB_PASSWORD_FILE


def new_db_password() -> str:
    """Return a new random database password."""
    return secrets.token_urlsafe(DB_PASSWORD_BYTES)


def read_secret(path: Path) -> SecretStr | None:
    """Return the secret in ``path`` (its first line), or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    value = text.strip()
    return SecretStr(value) if value else None


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path``, readable and writable by its owner only (0600).

    The folder is made (0700) when missing. An existing file keeps its mode 0600: it is
    truncated in place, never recreated with looser permissions.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


def resolve_password(explicit: SecretStr | None, path: Path) -> SecretStr | None:
    """Return the local database's password: ``explicit`` when given, else the secret file's.

    This is the one rule every client of the local stack's database follows
    (``PARKSENSE_DB_PASSWORD`` wins; otherwise ``<state>/secrets/db.password``).
    """
    return explicit if explicit is not None else read_secret(path)


def local_database(state_dir: Path, db: DatabaseSettings) -> DatabaseSettings:
    """Return ``db`` with the password of the local stack under ``state_dir`` filled in.

    An explicit password (``PARKSENSE_DB_PASSWORD``) is kept; without one and without a
    secret file (an external database, or no stack made yet), ``db`` is returned as it is
    and libpq's own defaults (``PGPASSWORD``, ``~/.pgpass``) apply.
    """
    password = resolve_password(db.password, db_password_file(state_dir))
    if password is db.password:
        return db
    return db.model_copy(update={"password": password})
