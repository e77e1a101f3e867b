"""Versioned schema migrations: ordered SQL files, each applied once and recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from services.storage.errors import MigrationError

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every parksense process.
_ADVISORY_LOCK_KEY = 0x7061726B  # "park"


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file under ``services/storage/migrations``."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Return the packaged migrations ordered by version (``NNNN_name.sql``)."""
    folder = resources.files("services.storage").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        migrations.append(
            Migration(int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return migrations


def apply_migrations(conninfo: str) -> list[int]:
    """Apply every pending migration; safe to call from several processes at once.

    Returns:
        The versions applied by this call (empty when the schema was current).
    """
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                logger.info("Applying migration %04d %s", migration.version, migration.name)
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d} {migration.name} failed: {exc}",
                        sqlstate=exc.sqlstate,
                    ) from exc
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied
