"""Property: whatever bytes arrive on whatever topic, ingest keeps running and loses nothing.

Hypothesis draws topics under ``parksense/v1/`` (the contract's, unknown devices, extra
levels, unicode levels), payloads (arbitrary bytes, arbitrary JSON with NaN and lone
surrogates, deep nesting, huge numbers, samples and arrays of samples with poisoned names
and values) and publishes them through the real broker to one real ingest process. Each
message is judged by the core's own ``judge_message`` to say what it should become; the
database must then hold exactly that: every dead letter, every reading, and nothing else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.fleet import parse_fleet
from services.config import MqttSettings
from services.core.deadletters import stored_topic
from services.core.registry import Registry, registry_from_fleet
from services.core.validate import Limits, judge_message
from services.storage.fleet_store import load_fleet
from tests.harness.ingest import IngestProcess, Publisher, acked_all, unique_prefix
from tests.harness.waiting import wait_until

PREFIX = unique_prefix()
PARK, FACTORY = f"{PREFIX}-park", f"{PREFIX}-f1"
SENSORS = [f"{PREFIX}-e{i}" for i in range(3)]
LINES = [f"{PREFIX}-l{i}" for i in range(2)]
SENTINEL = f"{PREFIX}-sentinel"  # one valid reading after each example's messages
_DEVICE_LINES = [f"{{id: {d}, type: env_sensor}}" for d in [*SENSORS, SENTINEL]] + [
    f"{{id: {d}, type: production_line, capacity_units_per_hour: 60}}" for d in LINES
]
FLEET = "\n".join(
    [
        "parks:",
        f"  - id: {PARK}",
        "    factories:",
        f"      - id: {FACTORY}",
        "        devices:",
        *(f"          - {line}" for line in _DEVICE_LINES),
        "",
    ]
)
NOW = datetime.now(UTC)

T = TypeVar("T")


def _weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Draw from each strategy in proportion to its weight (``one_of`` weighs all alike)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


# Text MQTT allows in a topic and Mosquitto accepts (no control characters, surrogates,
# unassigned code points or non-characters; no wildcards or level separators).
_TOPIC_CHAR = st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="+#/")
# Text a device may put in JSON: anything at all, NUL and lone surrogates included.
_ANY_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=12),
    st.sampled_from(["x\x00", "\x00", "\ud800", "run\udfffning", "\ud83d", "\u00e9\x00\ud800"]),
)

# Measured times well away from the limits (5 min ahead, 30 days back), so that the
# test's clock and ingest's clock agree on every judgement.
_TS = st.one_of(
    st.integers(1, 3_000_000).map(lambda ms: NOW - timedelta(hours=2) + timedelta(milliseconds=ms)),
    st.sampled_from([NOW + timedelta(hours=1), NOW - timedelta(days=40)]),
).map(lambda ts: ts.isoformat())
_TS_FIELD = st.one_of(
    _TS,
    _TS.map(lambda iso: int(datetime.fromisoformat(iso).timestamp() * 1000)),
    st.integers(),
    _ANY_TEXT,
    st.none(),
)
_METRIC = st.one_of(
    st.sampled_from(["temp_c", "humidity_pct", "pm25_ugm3", "state", "output_units"]),
    _ANY_TEXT,
)
_SCALAR = st.one_of(
    st.floats(0, 40),  # valid for every gauge and counter of both types
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from(["running", "idle", "fault", "stopped"]),
    _ANY_TEXT,
    st.booleans(),
    st.none(),
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
_SAMPLE = st.fixed_dictionaries(
    {"metrics": st.dictionaries(_METRIC, _JSON, max_size=5)},
    optional={"ts": _TS_FIELD, "seq": _SCALAR},
)


# Mostly good samples, so that stored readings and per-reading refusals sit side by side.
_GOOD_METRIC = st.sampled_from(["temp_c", "humidity_pct", "pm25_ugm3", "state", "output_units"])
_GOOD_VALUE = st.one_of(st.floats(0, 40), st.sampled_from(["running", "idle", "fault"]))
_MOSTLY_GOOD_SAMPLE = st.fixed_dictionaries(
    {
        "ts": _TS,
        "metrics": st.dictionaries(
            _weighted((3, _GOOD_METRIC), (1, _ANY_TEXT)),
            _weighted((3, _GOOD_VALUE), (1, _SCALAR)),
            min_size=1,
            max_size=5,
        ),
    }
)


def _dumps(value: object) -> bytes:
    # The standard library writes NaN/Infinity and escapes lone surrogates as \ud800.
    return json.dumps(value).encode()


_PAYLOAD = _weighted(
    (1, st.binary(max_size=200)),
    (1, _SAMPLE.map(_dumps)),
    (3, _MOSTLY_GOOD_SAMPLE.map(_dumps)),
    (1, st.lists(_SAMPLE | _MOSTLY_GOOD_SAMPLE, min_size=1, max_size=4).map(_dumps)),
    (2, st.lists(_MOSTLY_GOOD_SAMPLE, min_size=1, max_size=4).map(_dumps)),
    (1, _JSON.map(_dumps)),
    (1, st.integers(1, 4000).map(lambda depth: b"[" * depth + b"]" * depth)),
    (
        1,
        st.integers(300, 5000).map(
            lambda digits: b'{"ts": 0, "metrics": {"temp_c": ' + b"9" * digits + b"}}"
        ),
    ),
    (
        1,
        st.sampled_from(
            [b"", b"1e999", b'{"online": true}', b'{"online": false, "ts": 0}', b"\xff\xfe{}"]
        ),
    ),
)
_DEVICE = st.sampled_from([*SENSORS, *LINES, *SENSORS, *LINES, f"{PREFIX}-ghost"])
_CONTRACT_TOPIC = st.tuples(_DEVICE, st.sampled_from(["telemetry", "telemetry", "status"])).map(
    lambda dc: f"parksense/v1/{PARK}/{FACTORY}/{dc[0]}/{dc[1]}"
)
_TOPIC = _weighted(
    (6, _CONTRACT_TOPIC),
    (1, st.just(f"parksense/v1/{PARK}/signals")),
    (1, _DEVICE.map(lambda d: f"parksense/v1/{PARK}/other-f/{d}/telemetry")),
    (
        2,
        st.lists(st.text(_TOPIC_CHAR, max_size=8), max_size=6).map(
            lambda levels: "/".join(["parksense", "v1", PREFIX, *levels])
        ),
    ),
)
_REGISTERED_TELEMETRY = st.sampled_from([*SENSORS, *LINES]).map(
    lambda d: f"parksense/v1/{PARK}/{FACTORY}/{d}/telemetry"
)
# Each example carries at least one mostly good message among the arbitrary ones.
_MESSAGES = st.builds(
    lambda others, good, at: [*others[:at], good, *others[at:]],
    st.lists(st.tuples(_TOPIC, _PAYLOAD), max_size=5),
    st.tuples(
        _REGISTERED_TELEMETRY,
        _MOSTLY_GOOD_SAMPLE.map(_dumps) | st.lists(_MOSTLY_GOOD_SAMPLE, max_size=3).map(_dumps),
    ),
    st.integers(0, 5),
)


@pytest.fixture
def worker(clean_db: str, ingest_factory: Callable[..., IngestProcess]) -> IngestProcess:
    """One ingest process over the property's fleet, for every example."""
    load_fleet(clean_db, parse_fleet(FLEET))
    process = ingest_factory()
    process.start()
    return process


def _state(conninfo: str) -> tuple[set[tuple[str, str, datetime]], int]:
    with psycopg.connect(conninfo) as conn:
        readings = conn.execute(
            "SELECT device_id, metric, ts FROM readings WHERE device_id LIKE %s", (PREFIX + "-%",)
        ).fetchall()
        row = conn.execute(
            "SELECT coalesce(max(message_id), 0) FROM dead_letter_messages"
        ).fetchone()
    return {(d, m, ts) for d, m, ts in readings}, int(row[0]) if row else 0


def _letters_after(conninfo: str, message_id: int) -> list[tuple[str, bytes | None]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (m.message_id) d.topic, m.payload"
            " FROM dead_letter_messages m JOIN dead_letters d USING (message_id)"
            " WHERE m.message_id > %s ORDER BY m.message_id",
            (message_id,),
        ).fetchall()
    return [(topic, None if p is None else bytes(p)) for topic, p in rows]


_counter = iter(range(1, 10**9))


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples every run; a failure is reproducible in CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=_MESSAGES)
def test_every_message_is_stored_or_dead_lettered_and_ingest_keeps_running(
    worker: IngestProcess,
    clean_db: str,
    mqtt_settings: MqttSettings,
    messages: list[tuple[str, bytes]],
) -> None:
    """Published = stored + dead-lettered (+ the platform's own, ignored); ingest never stops."""
    registry: Registry = registry_from_fleet(parse_fleet(FLEET))
    stored_before, last_letter = _state(clean_db)
    received_at = datetime.now(UTC)
    expected_letters: list[tuple[str, bytes | None]] = []
    expected_readings: set[tuple[str, str, datetime]] = set()
    for topic, payload in messages:
        outcome = judge_message(topic, payload, registry, received_at, Limits())
        assert (
            outcome.readings or outcome.rejections or outcome.status or topic.endswith("/signals")
        ), "the core dropped a message silently"
        for rejection in outcome.rejections:
            event(rejection.reason.value)
        if outcome.readings:
            event("stored readings")
        if outcome.status:
            event("stored status")
        if not (outcome.readings or outcome.rejections or outcome.status):
            event("ignored")
        if outcome.rejections:
            expected_letters.append((stored_topic(topic), payload))
        expected_readings |= {(r.device_id, r.metric, r.ts) for r in outcome.readings}
    sentinel_ts = NOW - timedelta(hours=3) + timedelta(milliseconds=next(_counter))
    sentinel = json.dumps({"ts": sentinel_ts.isoformat(), "metrics": {"temp_c": 1}}).encode()
    expected_readings.add((SENTINEL, "temp_c", sentinel_ts))

    publisher = Publisher(mqtt_settings)
    infos = publisher.publish_all(
        [*messages, (f"parksense/v1/{PARK}/{FACTORY}/{SENTINEL}/telemetry", sentinel)]
    )
    wait_until(lambda: all(i.is_published() for i in infos), 20)
    publisher.close()
    # One publisher, one worker, batches committed in order: once the sentinel is stored,
    # every message before it has been stored or dead-lettered.
    wait_until(
        lambda: (
            (SENTINEL, "temp_c", sentinel_ts) in _state(clean_db)[0]
            or worker.process is None
            or worker.process.poll() is not None
        ),
        30,
        message="the sentinel after the example's messages never landed",
    )
    assert worker.process is not None
    assert worker.process.poll() is None, worker.log_path.read_text()[-3000:]
    wait_until(lambda: acked_all(worker), 20, message="a message was never acknowledged")
    stored_after, _ = _state(clean_db)
    assert stored_after - stored_before == expected_readings - stored_before
    assert Counter(_letters_after(clean_db, last_letter)) == Counter(expected_letters)
