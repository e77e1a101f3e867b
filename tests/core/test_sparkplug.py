"""The Sparkplug B host's pure core: payload decoding, seq window, births and deaths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.fleet import parse_fleet
from schemas.sparkplug_b_pb2 import Payload
from services.core.readings import MessageOutcome, RejectReason, StatusReason
from services.core.registry import Registry, registry_from_fleet
from services.core.sparkplug import (
    REBIRTH_INTERVAL,
    SEQ_WINDOW,
    DeviceBirth,
    NodeState,
    SparkplugOutcome,
    born,
    judge_frames,
    observe_seq,
)
from services.core.sparkplug_payload import (
    MAX_METRICS,
    MAX_SPARKPLUG_BYTES,
    DataType,
    Frame,
    metric_value,
    parse_sparkplug_topic,
    read_frame,
    rebirth_command,
)
from services.core.validate import Limits

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PARK, FACTORY, METER = "p1", "f1", "m1"
KEY = (PARK, FACTORY)
FLEET = f"""
parks:
  - id: {PARK}
    factories:
      - id: {FACTORY}
        devices:
          - {{id: {METER}, type: power_meter}}
"""


def registry() -> Registry:
    return registry_from_fleet(parse_fleet(FLEET))


def payload(seq: int | None = None, metrics: list[dict[str, object]] | None = None) -> bytes:
    message = Payload(timestamp=NOW_MS)
    if seq is not None:
        message.seq = seq
    for metric in metrics or []:
        message.metrics.add(**metric)
    return message.SerializeToString()


def frame(kind: str, data: bytes, *, device: bool = True, at: datetime = NOW) -> Frame:
    topic = f"spBv1.0/{PARK}/{kind}/{FACTORY}" + (f"/{METER}" if device else "")
    read = read_frame(topic, data, at)
    assert isinstance(read, Frame), read
    return read


def birth_frames(bd_seq: int = 3) -> list[Frame]:
    nbirth = payload(0, [{"name": "bdSeq", "datatype": DataType.INT64, "long_value": bd_seq}])
    dbirth = payload(
        1,
        [
            {"name": "power_kw", "alias": 1, "datatype": DataType.DOUBLE, "double_value": 5.0},
            {"name": "energy_kwh", "alias": 2, "datatype": DataType.DOUBLE, "double_value": 9.0},
        ],
    )
    return [frame("NBIRTH", nbirth, device=False), frame("DBIRTH", dbirth)]


def judged(
    frames: list[Frame], states: dict[tuple[str, str], NodeState] | None = None
) -> SparkplugOutcome:
    return judge_frames(states or {}, frames, registry(), Limits())


def test_topics_name_the_park_the_factory_and_the_device() -> None:
    """Group = park, edge node = factory; device topics have one level more."""
    address = parse_sparkplug_topic(f"spBv1.0/{PARK}/DDATA/{FACTORY}/{METER}")
    assert address is not None
    assert (address.park_id, address.factory_id, address.device_id) == (PARK, FACTORY, METER)
    for bad in (
        f"spBv1.0/{PARK}/DDATA/{FACTORY}",
        f"spBv1.0/{PARK}/NDATA/{FACTORY}/{METER}",
        f"spBv1.0/{PARK}/XDATA/{FACTORY}",
        f"spBv1.0/Bad Park/NDATA/{FACTORY}",
    ):
        assert parse_sparkplug_topic(bad) is None, bad


@pytest.mark.parametrize(
    "topic",
    [
        "spBv1.0/STATE/host",
        f"spBv1.0/{PARK}/NCMD/{FACTORY}",
        f"spBv1.0/{PARK}/DCMD/{FACTORY}/{METER}",
    ],
)
def test_host_topics_are_neither_stored_nor_dead_lettered(topic: str) -> None:
    """Commands (our own Rebirth requests) and host state are ignored."""
    assert read_frame(topic, b"anything", NOW) == MessageOutcome()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff" * (MAX_SPARKPLUG_BYTES + 1), RejectReason.OVERSIZE),
        (b"\xff\xff\xff", RejectReason.MALFORMED_PROTOBUF),
        (
            payload(1, [{"name": "x", "double_value": 1.0}] * (MAX_METRICS + 1)),
            RejectReason.TOO_MANY_METRICS,
        ),
    ],
)
def test_payloads_are_bounded_before_and_after_parsing(data: bytes, reason: RejectReason) -> None:
    """Oversize is refused unparsed; too many metrics after parsing; garbage as malformed."""
    outcome = read_frame(f"spBv1.0/{PARK}/DDATA/{FACTORY}/{METER}", data, NOW)
    assert isinstance(outcome, MessageOutcome)
    assert [r.reason for r in outcome.rejections] == [reason]
    assert outcome.rejections[0].payload == data


@pytest.mark.parametrize(
    ("raw", "datatype", "value"),
    [
        (0xFF, DataType.INT8, -1),
        (0xFFFFFFFF, DataType.INT8, -1),  # sign-extended to 32 bits, as Tahu sends it
        (0x80000000, DataType.INT32, -(2**31)),
        (2**64 - 2, DataType.INT64, -2),
        (2**64 - 2, DataType.UINT64, 2**64 - 2),
        (7, None, 7),
    ],
)
def test_signed_integers_are_twos_complement(raw: int, datatype: int | None, value: int) -> None:
    """Int8..Int64 travel unsigned; the data type says how to read them."""
    assert metric_value(raw, datatype) == value


def test_seq_in_order_and_reordered_inside_the_window_is_no_gap() -> None:
    """Two workers may apply one node's messages out of order: that is not a loss."""
    state = born(NodeState(), 0, 0, NOW)
    for seq in (2, 1, 4, 3, 5):
        state, lost = observe_seq(state, seq)
        assert lost == ()
    assert state.seq == 5


def test_a_missing_seq_is_declared_lost_once_the_window_has_passed_it() -> None:
    """Seq 1 never comes: lost when SEQ_WINDOW newer seqs have arrived, once."""
    state = born(NodeState(), 0, 0, NOW)
    declared: list[int] = []
    for seq in range(2, SEQ_WINDOW + 3):
        state, lost = observe_seq(state, seq % 256)
        declared += lost
    assert declared == [1]


def test_seq_wraps_at_256() -> None:
    """255 is followed by 0."""
    state = born(NodeState(), 0, 254, NOW)
    for seq in (255, 0, 1):
        state, lost = observe_seq(state, seq)
        assert lost == ()


def test_births_declare_aliases_and_alias_only_data_becomes_readings() -> None:
    """DBIRTH values are readings; later DDATA with aliases only (and no data type) too."""
    ddata = payload(2, [{"alias": 1, "timestamp": NOW_MS + 5, "double_value": 12.5}])
    outcome = judged([*birth_frames(), frame("DDATA", ddata)])
    readings = [(r.metric, r.value) for o in outcome.outcomes for r in o.readings]
    assert readings == [("power_kw", 5.0), ("energy_kwh", 9.0), ("power_kw", 12.5)]
    assert outcome.outcomes[-1].readings[0].ts == NOW + timedelta(milliseconds=5)
    assert [s.reason for s in outcome.outcomes[1].statuses] == [StatusReason.BIRTH]
    assert outcome.rebirths == ()
    assert outcome.states[KEY].bd_seq == 3


def test_readings_are_judged_like_json_ones() -> None:
    """Unknown metric, wrong kind, out of range: the same reasons as for JSON telemetry."""
    ddata = payload(
        2,
        [
            {"name": "voltage", "double_value": 230.0},
            {"name": "power_kw", "string_value": "high"},
            {"name": "energy_kwh", "double_value": -5.0},
        ],
    )
    outcome = judged([*birth_frames(), frame("DDATA", ddata)])
    reasons = [r.reason for r in outcome.outcomes[-1].rejections]
    assert reasons == [
        RejectReason.UNKNOWN_METRIC,
        RejectReason.WRONG_KIND,
        RejectReason.OUT_OF_RANGE,
    ]


def test_an_unknown_alias_is_refused_and_asks_for_a_rebirth() -> None:
    """Alias 9 was never declared: unknown_alias, and one Rebirth request."""
    ddata = payload(2, [{"alias": 9, "double_value": 1.0}, {"alias": 1, "double_value": 2.0}])
    outcome = judged([*birth_frames(), frame("DDATA", ddata)])
    assert [r.reason for r in outcome.outcomes[-1].rejections] == [RejectReason.UNKNOWN_ALIAS]
    assert [r.metric for r in outcome.outcomes[-1].readings] == ["power_kw"]
    assert outcome.rebirths == (KEY,)


def test_rebirth_requests_are_spaced() -> None:
    """A second reason within REBIRTH_INTERVAL asks no second time; after it, again."""
    first = judged(
        [*birth_frames(), frame("DDATA", payload(2, [{"alias": 9, "double_value": 1.0}]))]
    )
    state = first.states[KEY]
    soon = frame(
        "DDATA", payload(3, [{"alias": 9, "double_value": 1.0}]), at=NOW + timedelta(seconds=1)
    )
    assert judged([soon], {KEY: state}).rebirths == ()
    later = frame(
        "DDATA", payload(3, [{"alias": 9, "double_value": 1.0}]), at=NOW + REBIRTH_INTERVAL
    )
    assert judged([later], {KEY: state}).rebirths == (KEY,)


def test_data_from_a_node_never_born_asks_for_a_rebirth() -> None:
    """A host that started after the node's NBIRTH asks for one; named metrics are kept."""
    outcome = judged([frame("DDATA", payload(7, [{"name": "power_kw", "double_value": 1.0}]))])
    assert outcome.rebirths == (KEY,)
    assert [r.metric for r in outcome.outcomes[0].readings] == ["power_kw"]


def test_node_death_with_the_current_bdseq_kills_its_devices_and_a_stale_one_does_not() -> None:
    """NDEATH pairs with its NBIRTH by bdSeq; an earlier session's will changes nothing."""
    state = judged(birth_frames(bd_seq=3)).states[KEY]

    def death(bd_seq: int) -> SparkplugOutcome:
        data = payload(None, [{"name": "bdSeq", "datatype": DataType.INT64, "long_value": bd_seq}])
        return judged([frame("NDEATH", data, device=False)], {KEY: state})

    stale = death(2)
    assert stale.outcomes[0].statuses == ()
    assert stale.states[KEY] == state
    current = death(3)
    [offline] = current.outcomes[0].statuses
    assert (offline.device_id, offline.online, offline.reason) == (METER, False, StatusReason.DEATH)
    assert current.states[KEY].bd_seq is None
    assert current.states[KEY].devices == {}


def test_device_death_takes_the_device_offline_and_forgets_its_aliases() -> None:
    """DDEATH: offline with reason death; its aliases need a new DBIRTH."""
    state = judged(birth_frames()).states[KEY]
    outcome = judged([frame("DDEATH", payload(2))], {KEY: state})
    [offline] = outcome.outcomes[0].statuses
    assert (offline.online, offline.reason) == (False, StatusReason.DEATH)
    assert METER not in outcome.states[KEY].devices


def test_a_birth_applied_before_its_nbirth_stays_with_the_new_session() -> None:
    """Another worker applied the DBIRTH first: the NBIRTH keeps it and counts its seq."""
    nbirth, dbirth = birth_frames()
    old = NodeState(bd_seq=1, seq=40, devices={"gone": DeviceBirth(NOW - timedelta(hours=1), 1)})
    outcome = judged([dbirth, nbirth], {KEY: old})
    state = outcome.states[KEY]
    assert set(state.devices) == {METER}
    assert state.bd_seq == 3
    for seq in range(2, SEQ_WINDOW + 3):
        state, lost = observe_seq(state, seq)
        assert lost == ()
    assert judged([dbirth, nbirth]).rebirths == ()  # a first birth, reordered: no request


def test_control_metrics_are_not_readings() -> None:
    """Control metrics (the specification's) and null values (declared, unmeasured): no rows."""
    ddata = payload(
        2,
        [
            {"name": "Device Control/Rebirth", "boolean_value": False},
            {"name": "power_kw", "datatype": DataType.DOUBLE, "is_null": True},
        ],
    )
    outcome = judged([*birth_frames(), frame("DDATA", ddata)])
    assert outcome.outcomes[-1].readings == ()
    assert outcome.outcomes[-1].rejections == ()


def test_the_rebirth_command_is_a_sparkplug_ncmd() -> None:
    """NCMD with Node Control/Rebirth = true (Boolean), timestamped."""
    command = Payload()
    command.ParseFromString(rebirth_command(NOW_MS))
    [metric] = command.metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == (
        "Node Control/Rebirth",
        DataType.BOOLEAN,
        True,
    )
    assert command.timestamp == NOW_MS
