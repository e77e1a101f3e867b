"""The Sparkplug B host end to end: pysparkplug edge nodes → broker → ingest → database → API."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient
from pysparkplug import DataType, Device, Metric, get_current_timestamp

from services.core.sparkplug import SEQ_WINDOW
from tests.harness.ingest import IngestProcess, scrape
from tests.harness.sparkplug import (
    LINE_ALIASES,
    METER_ALIASES,
    TIMEOUT_S,
    EdgeSite,
    Gateway,
    latest,
    metric,
    refusals,
)
from tests.harness.waiting import wait_until

# pysparkplug runs on paho 2's compatibility API, which warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Callback API version 1 is deprecated:DeprecationWarning"
)


def born_devices(conninfo: str, site: EdgeSite) -> set[str]:
    """The devices whose DBIRTH is in force in the stored state of the site's edge node."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT devices FROM sparkplug_nodes WHERE park_id = %s AND factory_id = %s",
            (site.park, site.factory),
        ).fetchone()
    return set(row[0]) if row else set()


def status(conninfo: str, device_id: str) -> tuple[bool | None, str | None]:
    """A device's announced online state and what announced it."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT online, status_reason FROM device_status WHERE device_id = %s", (device_id,)
        ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def latest_value(api: TestClient, device_id: str, name: str) -> object:
    """The latest value of one metric, None when there is none."""
    entry = latest(api, device_id)["metrics"].get(name)
    return None if entry is None else entry["value"]


def connected(gateways: Callable[[], Gateway], db_conninfo: str, site: EdgeSite) -> Gateway:
    """A new edge node, connected, whose devices' births are stored."""
    gateway = gateways()
    gateway.connect()
    wait_until(
        lambda: born_devices(db_conninfo, site) == {site.meter, site.line},
        TIMEOUT_S,
        message="the DBIRTHs were not stored",
    )
    return gateway


def test_aliased_data_reaches_latest_and_park_signals_across_two_workers(
    site: EdgeSite,
    api: TestClient,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """Births reach one worker and alias-only DDATA both; readings show in latest and signals."""
    pair = workers(2)
    gateway = connected(gateways, db_conninfo, site)
    start = get_current_timestamp()
    for i in range(1, 11):
        ts = start + 10 * i
        gateway.data(
            site.meter,
            [
                metric("power_kw", 20.0 + i, METER_ALIASES, named=False, ts=ts),
                metric("energy_kwh", 100.0 + i, METER_ALIASES, named=False, ts=ts),
            ],
        )
        gateway.data(site.line, [metric("output_units", 60 * i, LINE_ALIASES, named=False, ts=ts)])
    # Round robin between the workers: each device's messages may all be on one of them.
    wait_until(
        lambda: (
            latest_value(api, site.line, "output_units") == 600.0
            and latest_value(api, site.meter, "power_kw") == 30.0
        ),
        TIMEOUT_S,
        message="the last DDATA never reached latest",
    )
    assert refusals(db_conninfo, site) == []
    assert latest_value(api, site.meter, "energy_kwh") == 110.0
    assert latest_value(api, site.line, "state") == "running"  # from the DBIRTH
    line = latest(api, site.line)
    assert line["online"] is True
    assert line["status_reason"] == "birth"
    signals = api.get(f"/v1/parks/{site.park}/signals").json()["signals"]
    assert signals["power_kw"] == 30.0
    assert signals["operating_rate"] == 1.0
    assert signals["energy_kwh"] == pytest.approx(10.0)
    assert refusals(db_conninfo, site) == []
    received = [
        scrape(w.metrics_port).get("parksense_ingest_messages_received_total", 0) for w in pair
    ]
    assert all(count > 0 for count in received), received


def test_device_death_puts_the_device_offline_and_a_birth_brings_it_back(
    site: EdgeSite,
    api: TestClient,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """DDEATH: offline with reason death; a later DBIRTH: online again, reason birth."""
    workers(1)
    gateway = connected(gateways, db_conninfo, site)
    gateway.node.deregister(site.meter)  # pysparkplug publishes DDEATH
    wait_until(lambda: status(db_conninfo, site.meter) == (False, "death"), TIMEOUT_S)
    meter = latest(api, site.meter)
    assert meter["online"] is False
    assert meter["status_reason"] == "death"
    assert status(db_conninfo, site.line) == (True, "birth")
    gateway.node.register(Device(site.meter, Gateway.meter_metrics(5.0, 200.0)))  # DBIRTH
    wait_until(lambda: latest(api, site.meter)["online"] is True, TIMEOUT_S)
    assert latest(api, site.meter)["status_reason"] == "birth"
    assert latest_value(api, site.meter, "power_kw") == 5.0


def test_node_death_with_the_current_bdseq_kills_its_devices_and_a_restart_rebirths_them(
    site: EdgeSite,
    api: TestClient,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """The will's NDEATH takes the devices offline; the restarted node's births bring them back.

    An NDEATH with the earlier session's bdSeq, arriving after the new births (a late will),
    changes nothing.
    """
    workers(1)
    first = connected(gateways, db_conninfo, site)
    old_bd_seq = first.bd_seq
    first.die()  # the broker publishes the will: NDEATH with the current bdSeq
    for device in (site.meter, site.line):
        wait_until(lambda d=device: status(db_conninfo, d) == (False, "death"), TIMEOUT_S)  # type: ignore[misc]
    assert latest(api, site.meter)["online"] is False
    second = gateways()
    second.connect()  # the restarted edge node: new bdSeq, seq from 0, births again
    assert second.bd_seq != old_bd_seq
    for device in (site.meter, site.line):
        wait_until(lambda d=device: status(db_conninfo, d) == (True, "birth"), TIMEOUT_S)  # type: ignore[misc]
    second.node_death(old_bd_seq)
    second.data(site.meter, [metric("power_kw", 42.0, METER_ALIASES, named=False)])
    wait_until(lambda: latest_value(api, site.meter, "power_kw") == 42.0, TIMEOUT_S)
    # One worker, one connection: the stale NDEATH was judged before that DDATA.
    assert status(db_conninfo, site.meter) == (True, "birth")
    assert status(db_conninfo, site.line) == (True, "birth")
    assert latest(api, site.meter)["online"] is True


def test_a_seq_gap_asks_the_node_to_rebirth_and_is_dead_lettered(
    site: EdgeSite,
    api: TestClient,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """A seq never arrives: once the window has passed it, NCMD Rebirth and a seq_gap letter."""
    workers(1)
    gateway = connected(gateways, db_conninfo, site)
    gateway.skip_seq()
    start = get_current_timestamp()
    for i in range(SEQ_WINDOW):
        power = metric("power_kw", float(i), METER_ALIASES, named=False, ts=start + i)
        gateway.data(site.meter, [power])
    wait_until(gateway.rebirth_requested, TIMEOUT_S, message="no Rebirth request arrived")
    wait_until(lambda: refusals(db_conninfo, site), TIMEOUT_S)
    [(reason, topic, kept)] = refusals(db_conninfo, site)
    assert reason == "seq_gap"
    assert topic == f"spBv1.0/{site.park}/DDATA/{site.factory}/{site.meter}"
    assert kept
    # The data around the gap is stored: only the lost message is missing.
    wait_until(
        lambda: latest_value(api, site.meter, "power_kw") == float(SEQ_WINDOW - 1), TIMEOUT_S
    )


def test_an_unknown_alias_asks_the_node_to_rebirth_and_is_dead_lettered(
    site: EdgeSite,
    api: TestClient,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """An alias no DBIRTH declared: NCMD Rebirth and an unknown_alias letter; the rest is stored."""
    workers(1)
    gateway = connected(gateways, db_conninfo, site)
    unknown = Metric(
        timestamp=get_current_timestamp(), name=None, alias=99, datatype=DataType.DOUBLE, value=1.0
    )
    gateway.data(site.meter, [unknown, metric("power_kw", 7.0, METER_ALIASES, named=False)])
    wait_until(gateway.rebirth_requested, TIMEOUT_S, message="no Rebirth request arrived")
    wait_until(lambda: refusals(db_conninfo, site), TIMEOUT_S)
    assert [r[0] for r in refusals(db_conninfo, site)] == ["unknown_alias"]
    assert latest_value(api, site.meter, "power_kw") == 7.0


def test_a_payload_that_is_not_sparkplug_is_dead_lettered(
    site: EdgeSite,
    gateways: Callable[[], Gateway],
    workers: Callable[[int], list[IngestProcess]],
    db_conninfo: str,
) -> None:
    """Bytes that are no protobuf payload: a malformed_protobuf letter keeping the bytes."""
    workers(1)
    gateway = connected(gateways, db_conninfo, site)
    topic = f"spBv1.0/{site.park}/DDATA/{site.factory}/{site.meter}"
    gateway.node._client._client.publish(topic, b"\xff\xff\xff", qos=1)
    wait_until(lambda: refusals(db_conninfo, site), TIMEOUT_S)
    assert refusals(db_conninfo, site) == [("malformed_protobuf", topic, True)]
