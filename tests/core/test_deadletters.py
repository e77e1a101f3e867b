"""Dead letters: one per message, the payload once, refusals grouped by reason and bounded."""

from __future__ import annotations

import orjson

from services.core.deadletters import (
    DETAIL_MAX_CHARS,
    METRICS_LISTED,
    TOPIC_MAX_CHARS,
    dead_letter,
    minimal_dead_letter,
)
from services.core.readings import RejectReason
from services.core.validate import judge_message
from tests.harness.small_fleet import LIMITS, NOW, registry, topic


def test_many_refused_readings_make_one_letter_with_one_group() -> None:
    """2,000 unknown metrics are one dead letter, one group of 2,000, the payload once."""
    metrics = {f"x{i:04d}": 1 for i in range(2000)}
    payload = orjson.dumps({"ts": "2026-11-26T09:59:00Z", "metrics": metrics})
    outcome = judge_message(topic("e1"), payload, registry(), NOW, LIMITS)
    letter = dead_letter(*outcome.rejections)
    assert letter.payload is payload
    assert [(g.reason, g.refused) for g in letter.groups] == [(RejectReason.UNKNOWN_METRIC, 2000)]
    group = letter.groups[0]
    assert group.metrics == tuple(f"x{i:04d}" for i in range(METRICS_LISTED))
    assert group.metric == "x0000"
    assert group.detail.endswith("(and 1999 more)")
    assert len(group.detail) <= DETAIL_MAX_CHARS


def test_groups_follow_the_order_reasons_first_appear() -> None:
    """Each reason of a message is one group, in order, with its own count."""
    payload = orjson.dumps(
        [
            {"ts": "2026-11-26T09:59:00Z", "metrics": {"temp_c": 500, "volts": 1, "amps": 2}},
            {"ts": "2026-11-26T09:59:01Z", "metrics": {"humidity_pct": 101}},
        ]
    )
    outcome = judge_message(topic("e1"), payload, registry(), NOW, LIMITS)
    letter = dead_letter(*outcome.rejections)
    assert [(g.reason, g.refused, g.metrics) for g in letter.groups] == [
        (RejectReason.OUT_OF_RANGE, 2, ("temp_c", "humidity_pct")),
        (RejectReason.UNKNOWN_METRIC, 2, ("volts", "amps")),
    ]
    assert letter.refused == 4


def test_a_letter_holds_only_storable_bounded_text() -> None:
    """A NUL-laden 60,000-character topic is kept escaped and cut to TOPIC_MAX_CHARS."""
    bad = "parksense/v1/" + "\x00\ud800" * 30_000
    outcome = judge_message(bad, b"{}", registry(), NOW, LIMITS)
    letter = dead_letter(*outcome.rejections)
    assert len(letter.topic) <= TOPIC_MAX_CHARS
    for text in (letter.topic, letter.groups[0].detail):
        assert "\x00" not in text
        text.encode("utf-8")


def test_minimal_letter_keeps_reason_count_and_payload_in_ascii() -> None:
    """The fallback keeps the first reason, the total refused and the payload; text is ASCII."""
    payload = orjson.dumps({"ts": "2026-11-26T09:59:00Z", "metrics": {"volts": 1, "amps": 2}})
    outcome = judge_message(topic("e1"), payload, registry(), NOW, LIMITS)
    letter = dead_letter(*outcome.rejections)
    minimal = minimal_dead_letter(letter, "refused: caf\u00e9 \x00")
    assert minimal.payload is payload
    assert minimal.topic == topic("e1")
    assert [(g.reason, g.refused, g.metrics) for g in minimal.groups] == [
        (RejectReason.UNKNOWN_METRIC, 2, ())
    ]
    assert minimal.groups[0].detail == "refused: caf\\xe9 \\x00"
    assert (minimal.park_id, minimal.device_id) == (None, None)
