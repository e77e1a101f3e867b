"""The stream's fan-out and change detection, driven frame by frame (no database needed)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.api.stream.frames import (
    MAX_CHANGES_PER_TICK,
    AlarmCause,
    DeviceAlarm,
    DeviceOffline,
    ParkFrame,
    changes,
)
from services.api.stream.hub import MAX_REPLAY, ParkFeed, StreamEvent, Subscription, parse_event_id

STREAM = Path(__file__).resolve().parents[3] / "services" / "api" / "stream"
# What the pure half of the stream must not import: the database, the storage layer, the
# poller that feeds it.
IO_MODULES = ("psycopg", "psycopg_pool", "services.storage", "services.api.stream.poller")

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def frame(
    n: int,
    alarms: dict[str, DeviceAlarm] | None = None,
    offline: dict[str, DeviceOffline] | None = None,
) -> ParkFrame:
    """The n-th frame of park p, 2 s apart."""
    as_of = T0 + timedelta(seconds=2 * n)
    return ParkFrame(
        park_id="p",
        as_of=as_of,
        signals=orjson.dumps({"park_id": "p", "as_of": as_of, "n": n}, option=orjson.OPT_UTC_Z),
        alarms=alarms or {},
        offline=offline or {},
    )


def fault(device: str, metric: str = "state", reason: str = "state") -> DeviceAlarm:
    """A device in alarm for one cause."""
    cause = AlarmCause(metric=metric, reason=reason, ts=T0, text="fault")
    return DeviceAlarm(device_id=device, factory_id="f1", type="machine", causes=(cause,))


def gone(device: str, reason: str = "silence") -> DeviceOffline:
    """An offline device."""
    return DeviceOffline(device, "f1", "env_sensor", reason, since=T0, last_seen=T0)


def drain(sub: Subscription) -> list[StreamEvent]:
    """Everything queued for a subscription, without waiting."""
    found = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        if event is not None:
            found.append(event)
    return found


@pytest.fixture
def poller() -> ParkFeed:
    """A park's feed, fed frames by the test as its poller would (no database)."""
    return ParkFeed("p", queue_size=8)


def test_a_client_that_stops_reading_is_disconnected_and_others_keep_going(
    poller: ParkFeed,
) -> None:
    """A full queue ends that client's stream; a client that reads is unaffected."""
    slow, fast = poller.subscribe(None), poller.subscribe(None)
    for n in range(10):
        poller.publish(frame(n))
        assert drain(fast)
    assert slow.dropped
    assert slow.closed
    assert slow not in poller.subscribers
    assert fast in poller.subscribers
    assert not fast.closed
    assert slow.queue.qsize() == 1  # only the end marker: nothing was kept for it
    assert slow.queue.get_nowait() is None


def test_first_frame_gives_waiting_clients_a_snapshot_then_factories_and_signals(
    poller: ParkFeed,
) -> None:
    """Clients that came before the first poll get the same start as later ones."""
    early = poller.subscribe(None)
    assert drain(early) == []
    poller.publish(frame(0, alarms={"m1": fault("m1")}))
    events = drain(early)
    assert [e.event for e in events] == ["snapshot", "factories", "signals"]
    assert [a["device_id"] for a in orjson.loads(events[0].data)["alarms"]] == ["m1"]
    late = poller.subscribe(None)
    assert [e.event for e in drain(late)] == ["snapshot", "factories", "signals"]


def test_every_frame_sends_signals_with_increasing_ids(poller: ParkFeed) -> None:
    """Each poll is a ``signals`` event; ids name the poller and count up."""
    sub = poller.subscribe(None)
    for n in range(4):
        poller.publish(frame(n))
    signals = [e for e in drain(sub) if e.event == "signals"]
    assert [orjson.loads(e.data)["n"] for e in signals] == [0, 1, 2, 3]
    ids = [parse_event_id(e.id) for e in signals]
    assert {i[0] for i in ids if i} == {poller.epoch}
    seqs = [i[1] for i in ids if i]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_reconnect_replays_missed_changes_or_falls_back_to_a_snapshot(poller: ParkFeed) -> None:
    """A known Last-Event-ID replays the missed changes; too many missed gives a snapshot."""
    first = poller.subscribe(None)
    poller.publish(frame(0))
    last_id = drain(first)[-1].id
    poller.unsubscribe(first)
    poller.publish(frame(1, alarms={"m1": fault("m1")}))
    poller.publish(frame(2, alarms={"m1": fault("m1")}, offline={"e1": gone("e1")}))
    back = poller.subscribe(last_id)
    events = drain(back)
    assert [e.event for e in events] == ["alarm", "availability", "factories", "signals"]
    assert orjson.loads(events[0].data)["device_id"] == "m1"

    stranger = poller.subscribe("someone-else.3")
    assert drain(stranger)[0].event == "snapshot"

    n = 3
    for _ in range(MAX_REPLAY + 1):
        poller.publish(frame(n, alarms={"m1": fault("m1")} if n % 2 else {}))
        n += 1
    late = poller.subscribe(last_id)
    assert drain(late)[0].event == "snapshot"


def test_stale_is_sent_once_and_given_to_newcomers_until_a_fresh_frame(
    poller: ParkFeed,
) -> None:
    """A failing poll sends one ``stale`` event; a new client gets it too; signals end it."""
    sub = poller.subscribe(None)
    poller.publish(frame(0))
    drain(sub)
    poller.publish_stale("database_unreachable", "OperationalError")
    poller.publish_stale("database_unreachable", "OperationalError")
    stale = drain(sub)
    assert [e.event for e in stale] == ["stale"]
    assert orjson.loads(stale[0].data)["reason"] == "database_unreachable"
    newcomer = poller.subscribe(None)
    assert [e.event for e in drain(newcomer)] == ["snapshot", "factories", "stale"]
    poller.publish(frame(1))
    assert [e.event for e in drain(sub)] == ["signals"]


def test_a_client_waiting_through_an_outage_still_gets_its_snapshot(poller: ParkFeed) -> None:
    """A client that connected before the first successful poll is sent a snapshot by it."""
    early = poller.subscribe(None)
    poller.publish_stale("database_unreachable", "PoolTimeout")
    assert [e.event for e in drain(early)] == ["stale"]
    poller.publish(frame(0, offline={"e1": gone("e1")}))
    events = drain(early)
    assert [e.event for e in events] == ["snapshot", "factories", "signals"]
    assert [d["device_id"] for d in orjson.loads(events[0].data)["offline"]] == ["e1"]


def test_changes_say_who_entered_or_left_alarm_and_who_went_offline_or_came_back() -> None:
    """Entering, changing and leaving alarm, going offline, a new reason and coming back."""
    before = frame(0, alarms={"a": fault("a"), "b": fault("b"), "c": fault("c")})
    after = frame(
        1,
        alarms={"a": fault("a"), "b": fault("b", "vibration_mm_s", "above_max"), "d": fault("d")},
        offline={"c": gone("c"), "e": gone("e")},
    )
    found = [(c.event.value, orjson.loads(c.data)) for c in changes(before, after)]
    summary = [
        (event, data["device_id"], data.get("active", data.get("online"))) for event, data in found
    ]
    assert summary == [
        ("alarm", "b", True),
        ("alarm", "d", True),
        ("alarm", "c", False),
        ("availability", "c", False),
        ("availability", "e", False),
    ]
    cleared = next(d for e, d in found if e == "alarm" and d["device_id"] == "c")
    assert cleared["cleared_by"] == "offline"

    later = frame(2, offline={"e": gone("e", "last_will")})
    back = [(c.event.value, orjson.loads(c.data)) for c in changes(after, later)]
    availability = {d["device_id"]: d for e, d in back if e == "availability"}
    assert availability["c"]["online"] is True
    assert availability["e"]["reason"] == "last_will"
    assert {d["device_id"]: d["cleared_by"] for e, d in back if e == "alarm"} == {
        "a": "normal",
        "b": "normal",
        "d": "normal",
    }


def test_a_mass_change_is_sent_as_one_snapshot() -> None:
    """More changes than MAX_CHANGES_PER_TICK in one poll become a single snapshot."""
    offline = {f"d{i:03d}": gone(f"d{i:03d}") for i in range(MAX_CHANGES_PER_TICK + 1)}
    [only] = changes(frame(0), frame(1, offline=offline))
    assert only.event.value == "snapshot"
    assert len(orjson.loads(only.data)["offline"]) == MAX_CHANGES_PER_TICK + 1


@pytest.mark.parametrize("module", ["hub.py", "frames.py"])
def test_the_hub_and_its_frames_do_no_database_io(module: str) -> None:
    """hub.py and frames.py import neither psycopg, nor storage, nor the poller."""
    tree = ast.parse((STREAM / module).read_text(encoding="utf-8"))
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert imported, "no imports found: wrong path?"
    assert [m for m in imported if m.startswith(IO_MODULES)] == []
