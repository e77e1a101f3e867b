"""One worker cut off from the broker and the database mid-stream: nothing lost, nothing doubled.

The worker runs in a network namespace of its own, joined to the host by a veth pair; the
test takes the link down for longer than the broker's keepalive allows, so the broker
drops the connection, the worker's database write stalls, and acknowledgements of what
it committed meanwhile are lost with the connection. Then the link comes back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from services.access.sync import BrokerSync
from services.config import BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.core.access import PlatformRole
from services.stack.mosquitto import MosquittoBroker
from services.stack.postgres import PostgresCluster
from tests.harness.environment import free_port, make_temp_dir, platform_mqtt
from tests.harness.ingest import (
    Background,
    IngestProcess,
    ParksFleet,
    assert_exactly_stored,
    count_rows,
    make_messages,
    publish_concurrently,
    unique_prefix,
)
from tests.harness.netns import VethLink, netns_unavailable
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

READINGS = 60_000
PUBLISHERS = 4
# The cut-off worker's keepalive: the broker drops it after 1.5 of these without a packet,
# so the cut is a real disconnection within seconds, not a pause TCP hides.
KEEPALIVE_S = 2
_HBA_LINE = "host all all {address}/32 scram-sha-256  # parksense test: the veth namespace\n"


def broker_settings(broker: MosquittoBroker) -> MqttSettings:
    """Where ``broker`` listens."""
    return MqttSettings(host=broker.host, port=broker.port)


@pytest.fixture
def link() -> Iterator[VethLink]:
    """A fresh namespace and veth pair, always deleted afterwards."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    veth = VethLink()
    try:
        yield veth
    finally:
        veth.delete()


@pytest.fixture
def veth_db(
    link: VethLink, pg_cluster: PostgresCluster, db_settings: DatabaseSettings
) -> Iterator[DatabaseSettings]:
    """The session's PostgreSQL, also listening on the host end of the pair (this test only)."""
    hba = pg_cluster.data_dir / "pg_hba.conf"
    original_hba = hba.read_text()
    hba.write_text(original_hba + _HBA_LINE.format(address=link.ns_address))
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET listen_addresses = '{pg_cluster.host},{link.host_address}'")
    pg_cluster.restart()
    try:
        yield db_settings.model_copy(update={"host": link.host_address})
    finally:
        hba.write_text(original_hba)
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET listen_addresses")
        pg_cluster.restart()


@pytest.fixture
def veth_broker(
    link: VethLink, db_conninfo: str, mosquitto: MosquittoBroker
) -> Iterator[MosquittoBroker]:
    """This test's broker on the host end of the pair, with the session's credentials."""
    del mosquitto  # Requested so that the platform credentials exist.
    base = make_temp_dir("parksense-test-veth-mqtt-")
    broker = MosquittoBroker(base, free_port(link.host_address), link.host_address)
    try:
        broker.write_config()
        BrokerSync(
            BrokerAuthSettings(auth_dir=broker.auth_dir, pid_file=broker.pid_file),
            broker_settings(broker),
        ).sync(db_conninfo)
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workers(
    db_settings: DatabaseSettings,
    veth_db: DatabaseSettings,
    veth_broker: MosquittoBroker,
    link: VethLink,
    tmp_path: Path,
) -> Iterator[Callable[[], tuple[IngestProcess, IngestProcess]]]:
    """Start worker 1 of 2 on the host and worker 2 of 2 in the namespace."""
    made: list[IngestProcess] = []

    def start() -> tuple[IngestProcess, IngestProcess]:
        broker = broker_settings(veth_broker)
        host = IngestProcess(db_settings, broker, tmp_path, slot=(1, 2))
        inside = IngestProcess(
            veth_db,
            broker,
            tmp_path,
            slot=(2, 2),
            command_prefix=link.exec_prefix,
            extra_env={"PARKSENSE_INGEST_KEEPALIVE_S": str(KEEPALIVE_S)},
        )
        made.extend((host, inside))
        host.start()
        inside.start()
        return host, inside

    yield start
    for worker in made:
        worker.stop_and_forget_session()


def test_a_worker_cut_off_mid_stream_loses_nothing_and_doubles_nothing(
    clean_db: str,
    veth_broker: MosquittoBroker,
    link: VethLink,
    workers: Callable[[], tuple[IngestProcess, IngestProcess]],
) -> None:
    """Worker 2's link goes down mid-stream until the broker drops it, then comes back.

    A third of the messages goes out before the cut, a third during it, a third after.
    """
    fleet = ParksFleet(unique_prefix(), workers=2)
    fleet.load(clean_db)
    _, inside = workers()
    publisher = platform_mqtt(broker_settings(veth_broker), PlatformRole.SIMULATOR)
    messages, expected = make_messages(fleet, READINGS)
    before, during, after = (messages[i::3] for i in range(3))
    publishing = Background(lambda: publish_concurrently(publisher, before, PUBLISHERS))
    wait_until(lambda: count_rows(clean_db, fleet.prefix) > READINGS // 10, 60)
    link.cut()
    try:
        publish_concurrently(publisher, during, PUBLISHERS)
        # Cut off until both ends have given the connection up: the broker after 1.5
        # keepalives without a packet, the worker after a keepalive without a PINGRESP.
        wait_until(
            lambda: (
                f"Client {inside.client_id} has exceeded timeout"
                in veth_broker.log_file.read_text()
            ),
            60,
            message="the broker never dropped the cut-off worker",
        )
        wait_until(
            lambda: "Disconnected from the broker" in inside.log_path.read_text(),
            60,
            message="the cut-off worker never noticed the cut",
        )
    finally:
        link.restore()
    publish_concurrently(publisher, after, PUBLISHERS)
    publishing.join()
    assert_exactly_stored(clean_db, fleet, expected)
    assert inside.process is not None
    assert inside.process.poll() is None
    assert inside.log_path.read_text().count("Connected to") >= 2
