"""One-shot set-up of a deployed database: migrations, platform credentials, EMQX's role.

Run by the compose file's ``setup`` service (and ``parksense-setup.service``) before the
other processes start; safe to run again. The platform passwords come from the
environment (``INGEST_MQTT_PASSWORD``, ``API_MQTT_PASSWORD``, ``MAINTENANCE_MQTT_PASSWORD``)
and are stored hashed; EMQX gets a login role that may read the two credential views and
nothing else; with ``GRAFANA_DB_PASSWORD`` set, Grafana's read-only role may log in.
"""

# A script run by path in the image (deploy/ is not a package).
# ruff: noqa: INP001
from __future__ import annotations

import logging
import os
import sys

import psycopg
from psycopg import sql

from services.config import DatabaseSettings
from services.core.access import CredentialKind, PlatformRole
from services.storage.credentials import issue_credential, platform_password_valid
from services.storage.migrate import apply_migrations

logger = logging.getLogger("parksense.bootstrap")

# Platform roles and the environment variable holding each one's MQTT password.
PLATFORM_PASSWORDS = {
    PlatformRole.INGEST: "INGEST_MQTT_PASSWORD",
    PlatformRole.API: "API_MQTT_PASSWORD",
    PlatformRole.MAINTENANCE: "MAINTENANCE_MQTT_PASSWORD",
}
EMQX_ROLE = "emqx"
# The read-only role of the Grafana dashboard (migration 0037); it may log in once
# GRAFANA_DB_PASSWORD gives it a password (docs/grafana.md).
GRAFANA_ROLE = "parksense_grafana"
EMQX_VIEWS = ("mqtt_users", "mqtt_acl")


def main() -> int:
    """Apply migrations, store the platform credentials, grant EMQX its views."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    conninfo = DatabaseSettings().conninfo(application_name="parksense-bootstrap")
    applied = apply_migrations(conninfo)
    logger.info("Applied migrations: %s", applied or "none")
    with psycopg.connect(conninfo) as conn:
        for role, variable in PLATFORM_PASSWORDS.items():
            password = os.environ.get(variable, "")
            if not password:
                logger.error("%s is not set", variable)
                return 1
            if not platform_password_valid(conn, role.value, password):
                issue_credential(conn, CredentialKind.PLATFORM, role.value, password)
                logger.info("Stored the MQTT credential of platform role %s", role.value)
        emqx_password = os.environ.get("EMQX_DB_PASSWORD", "")
        if not emqx_password:
            logger.error("EMQX_DB_PASSWORD is not set")
            return 1
        with conn.transaction():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (EMQX_ROLE,))
            verb = "ALTER" if exists.fetchone() else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(EMQX_ROLE), sql.Literal(emqx_password)
                )
            )
            for view in EMQX_VIEWS:
                conn.execute(
                    sql.SQL("GRANT SELECT ON {} TO {}").format(
                        sql.Identifier(view), sql.Identifier(EMQX_ROLE)
                    )
                )
        logger.info("Role %s may read %s", EMQX_ROLE, ", ".join(EMQX_VIEWS))
        grafana_password = os.environ.get("GRAFANA_DB_PASSWORD", "")
        if grafana_password:
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(GRAFANA_ROLE), sql.Literal(grafana_password)
                )
            )
            logger.info("Role %s may log in (read-only, for Grafana)", GRAFANA_ROLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
