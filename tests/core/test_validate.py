"""Validation: every reading judged on its own, every refusal with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.core.readings import MessageOutcome, RejectReason
from services.core.validate import judge_message, parse_ts
from tests.harness.small_fleet import LIMITS, NOW, registry, topic

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))


def judge(device: str, payload: bytes | str, **kw: str):
    data = payload.encode() if isinstance(payload, str) else payload
    return judge_message(topic(device, **kw), data, registry(), NOW, LIMITS)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_case_gives_expected_rows_and_rejections(case: Path) -> None:
    """A payload in gives exactly the recorded rows and rejection reasons out."""
    spec = json.loads(case.read_text())
    payload = spec["payload"] if isinstance(spec["payload"], str) else json.dumps(spec["payload"])
    outcome = judge_message(spec["topic"], payload.encode(), registry(), NOW, LIMITS)
    rows = [
        [r.device_id, r.metric, r.ts.isoformat(), r.text if r.text is not None else r.value]
        for r in outcome.readings
    ]
    assert rows == spec["rows"]
    assert [j.reason.value for j in outcome.rejections] == spec["rejections"]


REFUSALS = [
    ("unknown device", "zz", {"ts": 0, "metrics": {"power_kw": 1}}, RejectReason.UNKNOWN_DEVICE),
    ("unknown metric", "m1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"volts": 1}},
     RejectReason.UNKNOWN_METRIC),
    ("string for a gauge", "m1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"power_kw": "1"}},
     RejectReason.WRONG_KIND),
    ("bool for a gauge", "m1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"power_kw": True}},
     RejectReason.WRONG_KIND),
    ("number for a state", "l1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"state": 1}},
     RejectReason.WRONG_KIND),
    ("unknown state", "l1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"state": "dancing"}},
     RejectReason.UNKNOWN_STATE),
    ("below range", "m1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"power_kw": -1}},
     RejectReason.OUT_OF_RANGE),
    ("above range", "e1", {"ts": "2026-11-26T09:59:00Z", "metrics": {"humidity_pct": 101}},
     RejectReason.OUT_OF_RANGE),
    ("future", "m1", {"ts": "2026-11-26T10:06:00Z", "metrics": {"power_kw": 1}},
     RejectReason.FUTURE_TIMESTAMP),
    ("too old", "m1", {"ts": "2026-10-26T09:00:00Z", "metrics": {"power_kw": 1}},
     RejectReason.TOO_OLD),
    ("no offset", "m1", {"ts": "2026-11-26T09:59:00", "metrics": {"power_kw": 1}},
     RejectReason.INVALID_TIMESTAMP),
    ("garbage ts", "m1", {"ts": "yesterday", "metrics": {"power_kw": 1}},
     RejectReason.INVALID_TIMESTAMP),
    ("missing ts", "m1", {"metrics": {"power_kw": 1}}, RejectReason.INVALID_TIMESTAMP),
    ("no metrics", "m1", {"ts": "2026-11-26T09:59:00Z"}, RejectReason.INVALID_PAYLOAD),
    ("empty metrics", "m1", {"ts": "2026-11-26T09:59:00Z", "metrics": {}},
     RejectReason.INVALID_PAYLOAD),
]  # fmt: skip


@pytest.mark.parametrize(
    ("device", "sample", "reason"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_each_refusal_reason_is_given(
    device: str, sample: dict[str, object], reason: RejectReason
) -> None:
    """A bad reading is refused with its machine-readable reason and nothing is stored."""
    outcome = judge(device, orjson.dumps(sample))
    assert outcome.readings == ()
    assert [j.reason for j in outcome.rejections] == [reason]
    assert outcome.rejections[0].detail


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_value_is_refused_alone(literal: str) -> None:
    """NaN and Infinity are refused per reading; the sample's other metrics are kept."""
    payload = (
        f'{{"ts": "2026-11-26T09:59:00Z", "metrics": {{"power_kw": {literal}, "energy_kwh": 5}}}}'
    )
    outcome = judge("m1", payload)
    assert [(r.metric, r.value) for r in outcome.readings] == [("energy_kwh", 5.0)]
    assert [j.reason for j in outcome.rejections] == [RejectReason.NOT_FINITE]
    assert outcome.rejections[0].metric == "power_kw"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", RejectReason.MALFORMED_JSON),
        (b"\xff\xfe", RejectReason.INVALID_UTF8),
        (b'{"ts": 0, "metrics": {"\xed\xa0\x80": 1}}', RejectReason.INVALID_UTF8),
        (b"42", RejectReason.INVALID_PAYLOAD),
        (b"[]", RejectReason.INVALID_PAYLOAD),
        (
            orjson.dumps([{"ts": 0, "metrics": {"power_kw": 1}}] * 1001),
            RejectReason.TOO_MANY_SAMPLES,
        ),
        (b"[" + b" " * (64 * 1024) + b"]", RejectReason.OVERSIZE),
    ],
    ids=[
        "malformed",
        "binary",
        "encoded-surrogate",
        "scalar",
        "empty-array",
        "too-many",
        "oversize",
    ],
)
def test_whole_message_refusals_keep_the_raw_payload(payload: bytes, reason: RejectReason) -> None:
    """A message that cannot be read at all becomes one dead letter with its raw payload."""
    outcome = judge("m1", payload)
    assert outcome.readings == ()
    assert len(outcome.rejections) == 1
    assert outcome.rejections[0].reason is reason
    assert outcome.rejections[0].payload == payload
    assert outcome.rejections[0].device_id == "m1"


def test_topic_naming_another_factory_is_refused() -> None:
    """A registered device on a topic that does not match the registry is refused."""
    outcome = judge("m1", '{"ts": 0, "metrics": {"power_kw": 1}}', factory="f9")
    assert [j.reason for j in outcome.rejections] == [RejectReason.TOPIC_MISMATCH]


@pytest.mark.parametrize(
    "bad_topic",
    ["parksense/v1/p1/f1/m1", "parksense/v2/p1/f1/m1/telemetry", "parksense/v1/P1/f1/m1/telemetry",
     "parksense/v1/p1/f1/m1/commands"],
)  # fmt: skip
def test_topic_outside_the_contract_is_refused(bad_topic: str) -> None:
    """Topics outside parksense/v1/{park}/{factory}/{device}/{telemetry|status} are refused."""
    outcome = judge_message(bad_topic, b"{}", registry(), NOW, LIMITS)
    assert [j.reason for j in outcome.rejections] == [RejectReason.BAD_TOPIC]


def test_store_and_forward_batch_judges_each_sample() -> None:
    """An array of samples gives a reading per good value and a rejection per bad one."""
    samples = [
        {"ts": "2026-11-26T09:00:00Z", "seq": 1, "metrics": {"power_kw": 10, "energy_kwh": 100}},
        {"ts": "2026-11-26T08:00:00+08:00", "metrics": {"power_kw": -5}},
        {"ts": 1795680000000, "metrics": {"energy_kwh": 101}},
    ]
    outcome = judge("m1", orjson.dumps(samples))
    assert [(r.metric, r.ts, r.value) for r in outcome.readings] == [
        ("power_kw", datetime(2026, 11, 26, 9, tzinfo=UTC), 10.0),
        ("energy_kwh", datetime(2026, 11, 26, 9, tzinfo=UTC), 100.0),
        ("energy_kwh", datetime(2026, 11, 26, 8, tzinfo=UTC), 101.0),
    ]
    assert [(j.reason, j.ts) for j in outcome.rejections] == [
        (RejectReason.OUT_OF_RANGE, datetime(2026, 11, 26, 0, tzinfo=UTC))
    ]


def test_state_metric_is_stored_as_text() -> None:
    """A state value is kept as text, not as a number."""
    outcome = judge("l1", '{"ts": "2026-11-26T09:59:00Z", "metrics": {"state": "running"}}')
    assert [(r.metric, r.value, r.text) for r in outcome.readings] == [("state", None, "running")]


def test_alarm_threshold_breach_is_stored_not_refused() -> None:
    """A value outside alarm thresholds but inside the valid range is stored."""
    outcome = judge("e1", '{"ts": "2026-11-26T09:59:00Z", "metrics": {"temp_c": 50}}')
    assert [r.value for r in outcome.readings] == [50.0]
    assert outcome.rejections == ()


def test_status_message_becomes_an_update() -> None:
    """A status payload updates the device's online state at its measured time."""
    outcome = judge("m1", '{"online": false, "ts": "2026-11-26T09:59:00Z"}', channel="status")
    assert outcome.status is not None
    assert outcome.status.online is False
    assert outcome.status.ts == NOW - timedelta(minutes=1)


def test_last_will_without_time_is_dated_at_receipt() -> None:
    """A will composed at connect time carries no ts; the receipt time stands in."""
    outcome = judge("m1", '{"online": false}', channel="status")
    assert outcome.status is not None
    assert outcome.status.ts == NOW


def test_bad_status_is_refused() -> None:
    """A status without a boolean ``online`` is refused."""
    outcome = judge("m1", '{"online": "yes"}', channel="status")
    assert [j.reason for j in outcome.rejections] == [RejectReason.INVALID_PAYLOAD]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-26T10:00:00.123Z", datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-26T18:00:00+08:00", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1795687200123, datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)),
    ],
)
def test_parse_ts_accepts_rfc3339_and_epoch_ms(raw: object, expected: datetime) -> None:
    """Both timestamp forms of the contract give aware UTC datetimes."""
    assert parse_ts(raw) == expected


@pytest.mark.parametrize("raw", [True, 1.5, None, "2026-11-26", 10**20])
def test_parse_ts_refuses_other_forms(raw: object) -> None:
    """Anything else is an invalid timestamp."""
    with pytest.raises(ValueError, match=r"ts|epoch"):
        parse_ts(raw)


UNSTORABLE = [
    ("NUL in a metric name", "e1", '{"ts": 0, "metrics": {"x\\u0000": 1}}'),
    ("lone surrogate metric name", "e1", '{"ts": 0, "metrics": {"\\ud800": 1}}'),
    ("NUL in a state", "l1", '{"ts": 0, "metrics": {"state": "running\\u0000"}}'),
    ("lone surrogate state", "l1", '{"ts": 0, "metrics": {"state": "\\udfff"}}'),
    ("NUL string for a gauge", "e1", '{"ts": 0, "metrics": {"temp_c": "\\u0000"}}'),
]


@pytest.mark.parametrize(
    ("device", "payload"), [c[1:] for c in UNSTORABLE], ids=[c[0] for c in UNSTORABLE]
)
def test_text_postgres_cannot_store_is_refused_with_its_own_reason(
    device: str, payload: str
) -> None:
    """NUL or a lone surrogate in a metric name or value is refused as unstorable_text."""
    now_ms = int(NOW.timestamp() * 1000)
    outcome = judge(device, payload.replace('"ts": 0', f'"ts": {now_ms}'))
    assert outcome.readings == ()
    assert [j.reason for j in outcome.rejections] == [RejectReason.UNSTORABLE_TEXT]
    rejection = outcome.rejections[0]
    assert "\x00" not in rejection.detail
    rejection.detail.encode("utf-8")  # no lone surrogate left in it
    if rejection.metric is not None:
        rejection.metric.encode("utf-8")
        assert "\x00" not in rejection.metric


def test_unstorable_reading_does_not_refuse_its_neighbours() -> None:
    """A poisoned metric is refused alone; the sample's other readings are kept."""
    outcome = judge("e1", '{"ts": "2026-11-26T09:59:00Z", "metrics": {"\\u0000": 1, "temp_c": 2}}')
    assert [(r.metric, r.value) for r in outcome.readings] == [("temp_c", 2.0)]
    assert [j.reason for j in outcome.rejections] == [RejectReason.UNSTORABLE_TEXT]


def test_refusal_details_are_bounded_whatever_the_value() -> None:
    """A 60 KB metric name or a deeply nested value gives a short detail."""
    nested = "[" * 500 + "]" * 500
    payload = (
        f'{{"ts": "2026-11-26T09:59:00Z", "metrics": {{"{"n" * 60_000}": 1, "temp_c": {nested}}}}}'
    )
    outcome = judge("e1", payload)
    assert [j.reason for j in outcome.rejections] == [
        RejectReason.UNKNOWN_METRIC,
        RejectReason.WRONG_KIND,
    ]
    assert all(len(j.detail) < 200 for j in outcome.rejections)


def test_every_rejection_of_a_message_carries_the_whole_payload() -> None:
    """Per-sample refusals refer to the message as it arrived, not a copy of their sample."""
    payload = orjson.dumps(
        [{"ts": "2026-11-26T09:59:00Z", "metrics": {"volts": 1}}, {"metrics": {"temp_c": 1}}]
    )
    outcome = judge("e1", payload)
    assert [j.reason for j in outcome.rejections] == [
        RejectReason.UNKNOWN_METRIC,
        RejectReason.INVALID_TIMESTAMP,
    ]
    assert all(j.payload is payload for j in outcome.rejections)


def test_future_dated_status_is_refused_like_telemetry() -> None:
    """A status dated beyond max_future is refused, and moves nobody's online state."""
    future = NOW + LIMITS.max_future + timedelta(seconds=1)
    outcome = judge(
        "m1", orjson.dumps({"online": False, "ts": future.isoformat()}), channel="status"
    )
    assert outcome.status is None
    assert [j.reason for j in outcome.rejections] == [RejectReason.FUTURE_TIMESTAMP]


def test_status_just_inside_max_future_is_accepted() -> None:
    """A status dated exactly max_future after receipt is still an update."""
    edge = NOW + LIMITS.max_future
    outcome = judge("m1", orjson.dumps({"online": True, "ts": edge.isoformat()}), channel="status")
    assert outcome.status is not None
    assert outcome.status.ts == edge


def test_the_platforms_signals_topic_is_ignored() -> None:
    """A park's signals, published by the platform itself, are neither stored nor refused."""
    outcome = judge_message("parksense/v1/p1/signals", b"{}", registry(), NOW, LIMITS)
    assert outcome == MessageOutcome()


@pytest.mark.parametrize(
    "bad_topic",
    ["parksense/v1/p1/f1/m1/telemetry/extra", "parksense/v1/p1/f1/m1/events", "parksense/v1",
     "parksense/v1/p1/signals/x", "parksense/v1/P1/signals"],
)  # fmt: skip
def test_unmatched_topics_under_the_root_are_bad_topics(bad_topic: str) -> None:
    """An extra level or an unknown channel under parksense/v1/ is a bad_topic dead letter."""
    outcome = judge_message(bad_topic, b"{}", registry(), NOW, LIMITS)
    assert [j.reason for j in outcome.rejections] == [RejectReason.BAD_TOPIC]
    assert outcome.rejections[0].payload == b"{}"
