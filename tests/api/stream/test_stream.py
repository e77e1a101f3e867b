"""The live stream end to end: MQTT → real ingest process → TimescaleDB → API process → SSE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from services.config import DatabaseSettings, MqttSettings
from tests.harness.live import LiveStack, SseClient, SseEvent, live_stack, now_ts, sample, send
from tests.harness.waiting import wait_until


@pytest.fixture
def live(
    clean_db: str, db_settings: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path
) -> Iterator[LiveStack]:
    """A park reporting through a real ingest worker, and the API as a real process."""
    with live_stack(clean_db, db_settings, mqtt_settings, tmp_path) as stack:
        yield stack


def is_signals(event: SseEvent) -> bool:
    return event.event == "signals"


def alarms_now(live: LiveStack) -> int:
    """Devices in alarm according to GET /signals."""
    return int(live.signals()["counts"]["devices_in_alarm"])


def test_unknown_park_is_a_404_problem(live: LiveStack) -> None:
    """A stream of a park that does not exist is refused with problem+json."""
    client = SseClient(live.api.host, live.api.port, "/v1/parks/no-such-park/stream")
    assert client.status == 404
    assert client.content_type.startswith("application/problem+json")
    assert b"no-such-park" in client.body


def test_connection_gets_retry_snapshot_factories_and_signals_with_ids(live: LiveStack) -> None:
    """A new client gets a retry hint, then a snapshot, the factory table and the signals."""
    client = live.follow()
    try:
        assert client.status == 200
        assert client.content_type.startswith("text/event-stream")
        first = [event for event, _ in zip(client.stream(), range(3), strict=False)]
        assert [e.event for e in first] == ["snapshot", "factories", "signals"]
        assert client.retry == 2000
        assert all(e.id for e in first)
        snapshot = first[0].json()
        assert snapshot["alarms"] == []
        assert snapshot["offline"] == []
        factories = {f["factory_id"]: f for f in first[1].json()["factories"]}
        f1, f2 = factories[live.park.factory("f1")], factories[live.park.factory("f2")]
        assert (f1["name"], f1["operating"], f1["devices_online"], f1["devices"]) == (
            "Alpha Precision",
            True,
            3,
            3,
        )
        assert (f2["operating"], f2["lines_running"], f2["power_kw"]) == (False, 0, 0.0)
        assert f1["power_kw"] == 182.5
        signals = first[2].json()
        assert signals["park_id"] == live.park.park
        assert signals["signals"]["operating_rate"] == 0.5
    finally:
        client.close()


def test_signals_event_is_the_signals_endpoint_at_its_as_of(live: LiveStack) -> None:
    """The data of a ``signals`` event equals GET /signals computed at the event's as_of."""
    client = live.follow()
    try:
        event = client.wait_for(is_signals).json()
    finally:
        client.close()
    status, body = live.api.get(f"/v1/parks/{live.park.park}/signals?as_of={quote(event['as_of'])}")
    assert status == 200
    assert body == event


def test_signals_keep_coming_and_follow_a_published_change(live: LiveStack) -> None:
    """Signals arrive again and again; a line starting to run raises the operating rate."""
    client = live.follow()
    try:
        stamps = [client.wait_for(is_signals).json()["as_of"] for _ in range(3)]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 3
        send(live.publisher, [(live.park.topic("l2"), sample({"state": "running"}))])
        changed = client.wait_for(
            lambda e: is_signals(e) and e.json()["signals"]["operating_rate"] == 1.0,
            message="operating_rate never reached 1.0",
        ).json()
        assert changed["counts"]["factories_operating"] == 2
    finally:
        client.close()


def test_fault_raises_an_alarm_event_and_running_again_clears_it(live: LiveStack) -> None:
    """A machine reporting ``fault`` enters alarm with its reason; ``running`` clears it."""
    mach = live.park.device("mach")
    client = live.follow()
    try:
        client.wait_for(is_signals)
        send(live.publisher, [(live.park.topic("mach"), sample({"state": "fault"}))])
        raised = client.wait_for(lambda e: e.event == "alarm", message="no alarm event").json()
        assert raised["device_id"] == mach
        assert raised["active"] is True
        assert raised["factory_id"] == live.park.factory("f1")
        assert [(r["metric"], r["reason"], r["text"]) for r in raised["reasons"]] == [
            ("state", "state", "fault")
        ]
        assert raised["since"] is not None
        send(live.publisher, [(live.park.topic("mach"), sample({"state": "running"}))])
        cleared = client.wait_for(lambda e: e.event == "alarm", message="no clearing").json()
        assert (cleared["device_id"], cleared["active"], cleared["cleared_by"]) == (
            mach,
            False,
            "normal",
        )
    finally:
        client.close()


def test_gauge_beyond_its_threshold_carries_value_threshold_and_unit(live: LiveStack) -> None:
    """A vibration above the machine type's 7.1 mm/s is an alarm with value, bound and unit."""
    client = live.follow()
    try:
        client.wait_for(is_signals)
        send(live.publisher, [(live.park.topic("mach"), sample({"vibration_mm_s": 9.4}))])
        raised = client.wait_for(lambda e: e.event == "alarm").json()
        [reason] = raised["reasons"]
        assert (reason["metric"], reason["reason"], reason["value"], reason["threshold"]) == (
            "vibration_mm_s",
            "above_max",
            9.4,
            7.1,
        )
        assert reason["unit"] == "mm/s"
    finally:
        client.close()


def test_last_will_sends_offline_and_a_new_reading_sends_back_online(live: LiveStack) -> None:
    """A device's offline status is an ``availability`` event; its next reading brings it back."""
    env = live.park.device("env")
    client = live.follow()
    try:
        client.wait_for(is_signals)
        status = {"online": False, "ts": now_ts()}
        send(live.publisher, [(live.park.topic("env", "status"), status)])
        offline = client.wait_for(lambda e: e.event == "availability").json()
        assert (offline["device_id"], offline["online"], offline["reason"]) == (
            env,
            False,
            "last_will",
        )
        assert offline["since"] is not None
        send(live.publisher, [(live.park.topic("env"), sample({"temp_c": 23.0}))])
        back = client.wait_for(lambda e: e.event == "availability").json()
        assert (back["device_id"], back["online"]) == (env, True)
    finally:
        client.close()


def test_reconnecting_with_last_event_id_replays_what_was_missed(live: LiveStack) -> None:
    """A client back with its Last-Event-ID gets the missed alarm, not a snapshot."""
    mach = live.park.device("mach")
    first = live.follow()
    try:
        first.wait_for(is_signals)
    finally:
        first.close()
    assert first.last_id is not None
    send(live.publisher, [(live.park.topic("mach"), sample({"state": "fault"}))])
    wait_until(lambda: alarms_now(live) == 1, 20, interval_s=0.2)
    again = live.follow({"Last-Event-ID": first.last_id})
    try:
        replayed = again.wait_for(lambda e: e.event in {"alarm", "snapshot"})
    finally:
        again.close()
    assert replayed.event == "alarm"
    assert replayed.json()["device_id"] == mach
    assert replayed.json()["active"] is True


def test_unknown_last_event_id_gets_a_snapshot_of_current_alarms(live: LiveStack) -> None:
    """An id from another process (or a restarted poller) gets a snapshot instead."""
    mach = live.park.device("mach")
    send(live.publisher, [(live.park.topic("mach"), sample({"state": "fault"}))])
    wait_until(lambda: alarms_now(live) == 1, 20, interval_s=0.2)
    client = live.follow({"Last-Event-ID": "0badc0de.12"})
    try:
        snapshot = client.wait_for(
            lambda e: e.event == "snapshot" and bool(e.json()["alarms"]),
            message="no snapshot listing the alarm",
        ).json()
    finally:
        client.close()
    assert [a["device_id"] for a in snapshot["alarms"]] == [mach]


def test_clients_of_one_park_share_one_poller(live: LiveStack) -> None:
    """Two clients of a park are served by one poller; both get the same signals events."""
    one, two = live.follow(), live.follow()
    try:
        # The third one is broadcast by a poll made after both clients subscribed.
        a = [one.wait_for(is_signals) for _ in range(3)][-1]
        b = two.wait_for(lambda e: is_signals(e) and e.id == a.id)
        assert a.data == b.data
        _, metrics = live.api.get("/metrics")
        assert "parksense_api_stream_pollers 1.0" in metrics
        assert "parksense_api_stream_clients 2.0" in metrics
    finally:
        one.close()
        two.close()
