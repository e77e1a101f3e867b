"""Session fixtures: a real PostgreSQL + TimescaleDB cluster and a real Mosquitto broker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from services.access.sync import BrokerSync
from services.config import BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.core.access import CredentialKind, PlatformRole
from services.stack.errors import MissingComponentError
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from services.storage.credentials import issue_credential
from services.storage.migrate import apply_migrations
from tests.harness.environment import (
    PLATFORM_PASSWORDS,
    TEST_CLUSTER_SETTINGS,
    free_port,
    make_temp_dir,
    platform_mqtt,
)

TEST_DATABASE = "parksense_test"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster with TimescaleDB on a free port, stopped at session end.

    It authenticates every connection with a password, as the local stack's does: the
    fixtures below hand it on (``conninfo``, ``database_settings``).
    """
    base = make_temp_dir("parksense-test-pg-")
    cluster = PostgresCluster(base / "data", free_port(), settings=TEST_CLUSTER_SETTINGS)
    try:
        try:
            cluster.start()
        except MissingComponentError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def db_conninfo(pg_cluster: PostgresCluster) -> str:
    """Connection string of the database ``parksense_test``, migrated by the production code."""
    pg_cluster.ensure_database(TEST_DATABASE)
    conninfo = pg_cluster.conninfo(TEST_DATABASE)
    apply_migrations(conninfo)
    return conninfo


@pytest.fixture(scope="session")
def db_settings(pg_cluster: PostgresCluster, db_conninfo: str) -> DatabaseSettings:
    """``DatabaseSettings`` of the migrated test database."""
    del db_conninfo  # Requested so that the database exists and is migrated.
    return pg_cluster.database_settings(TEST_DATABASE)


# Tables a test never empties: the schema's own rows and the platform's credentials,
# which the session's broker and ingest workers connect with.
_KEPT_TABLES = ("schema_migrations", "mqtt_platform_grants", "mqtt_credentials")


@pytest.fixture
def clean_db(db_conninfo: str) -> str:
    """Empty every table but the platform's own rows; return the connection string."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> ALL(%s)"
                " ORDER BY tablename",
                (list(_KEPT_TABLES),),
            )
        ]
        conn.execute("DELETE FROM mqtt_credentials WHERE kind <> 'platform'")
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(table) for table in tables)
                )
            )
    return db_conninfo


@pytest.fixture(scope="session")
def mosquitto(db_conninfo: str) -> Iterator[MosquittoBroker]:
    """A Mosquitto broker with persistence and authentication on a free port.

    The platform's credentials (ingest, API, simulator) are issued into the test database
    and rendered into the broker's files, as the local stack does; tests may ``restart()``
    the broker.
    """
    base = make_temp_dir("parksense-test-mqtt-")
    broker = MosquittoBroker(base, free_port())
    with psycopg.connect(db_conninfo) as conn:
        for role in PlatformRole:
            PLATFORM_PASSWORDS[role] = issue_credential(
                conn, CredentialKind.PLATFORM, role.value
            ).password
    try:
        try:
            broker.write_config()
            BrokerSync(
                BrokerAuthSettings(auth_dir=broker.auth_dir, pid_file=broker.pid_file),
                MqttSettings(host=broker.host, port=broker.port),
            ).sync(db_conninfo)
            broker.start()
        except MissingComponentError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def broker_auth(mosquitto: MosquittoBroker) -> BrokerAuthSettings:
    """Where the test broker's credential files are, for code that issues credentials."""
    return BrokerAuthSettings(auth_dir=mosquitto.auth_dir, pid_file=mosquitto.pid_file)


@pytest.fixture(scope="session")
def mqtt_settings(mosquitto: MosquittoBroker) -> MqttSettings:
    """``MqttSettings`` of the test broker with the simulator's credential (publishes)."""
    return platform_mqtt(
        MqttSettings(host=mosquitto.host, port=mosquitto.port), PlatformRole.SIMULATOR
    )
