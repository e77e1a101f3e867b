"""Session fixtures: a real PostgreSQL + TimescaleDB cluster and a real Mosquitto broker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from services.config import DatabaseSettings, MqttSettings
from services.stack.errors import MissingComponentError
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from services.storage.migrate import apply_migrations
from tests.helpers import TEST_CLUSTER_SETTINGS, free_port, make_temp_dir

TEST_DATABASE = "parksense_test"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster with TimescaleDB on a free port, stopped at session end."""
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
    return DatabaseSettings(
        host=pg_cluster.host,
        port=pg_cluster.port,
        name=TEST_DATABASE,
        user=pg_cluster.superuser,
    )


@pytest.fixture
def clean_db(db_conninfo: str) -> str:
    """Empty every table except ``schema_migrations``; return the connection string."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
                " ORDER BY tablename"
            )
        ]
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(table) for table in tables)
                )
            )
    return db_conninfo


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """A Mosquitto broker with persistence on a free port; tests may ``restart()`` it."""
    base = make_temp_dir("parksense-test-mqtt-")
    broker = MosquittoBroker(base, free_port())
    try:
        try:
            broker.start()
        except MissingComponentError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def mqtt_settings(mosquitto: MosquittoBroker) -> MqttSettings:
    """``MqttSettings`` of the test broker."""
    return MqttSettings(host=mosquitto.host, port=mosquitto.port)
