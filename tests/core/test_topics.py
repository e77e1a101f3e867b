"""Topics: parse the v1 contract, build the subscription filters."""

from __future__ import annotations

import pytest

from services.core import topics
from services.core.topics import (
    Channel,
    TopicAddress,
    is_platform_topic,
    legacy_subscription_filters,
    parse_topic,
    subscription_filters,
)


def test_telemetry_topic_is_parsed() -> None:
    """A v1 telemetry topic names a park, a factory and a device."""
    assert parse_topic("parksense/v1/hebi-tech/f01/f01-meter-1/telemetry") == TopicAddress(
        "hebi-tech", "f01", "f01-meter-1", Channel.TELEMETRY
    )


def test_a_topic_seen_before_gives_the_same_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed once, then looked up; the kept addresses stay bounded, and still right."""
    monkeypatch.setattr(topics, "_KNOWN_TOPICS_MAX", 3)
    monkeypatch.setattr(topics, "_known_topics", {})
    for n in range(10):
        topic = f"parksense/v1/p/f/d{n % 5}/status"
        first = parse_topic(topic)
        assert first == TopicAddress("p", "f", f"d{n % 5}", Channel.STATUS)
        assert parse_topic(topic) is first
        assert len(topics._known_topics) <= 3
    assert parse_topic("parksense/v1/p/f/d0/events") is None
    assert "parksense/v1/p/f/d0/events" not in topics._known_topics


@pytest.mark.parametrize(
    "topic",
    [
        "parksense/v1/a/b/c",
        "parksense/v1/a/b/c/d/telemetry",
        "other/v1/a/b/c/telemetry",
        "parksense/v1/-a/b/c/telemetry",
        "parksense/v1/a/b/" + "c" * 65 + "/telemetry",
        "parksense/v1/a/b/c/events",
    ],
)
def test_other_topics_are_not_parsed(topic: str) -> None:
    """Anything outside the contract gives None."""
    assert parse_topic(topic) is None


def test_ingest_subscribes_to_everything_under_both_roots() -> None:
    """One filter per namespace (parksense/v1/, spBv1.0/), shared through a group when set."""
    assert subscription_filters("ingest") == [
        "$share/ingest/parksense/v1/#",
        "$share/ingest/spBv1.0/#",
    ]
    assert subscription_filters(None) == ["parksense/v1/#", "spBv1.0/#"]


def test_legacy_filters_are_the_per_channel_ones() -> None:
    """The filters of earlier versions, removed on connect, are the two per-channel ones."""
    assert legacy_subscription_filters("ingest") == [
        "$share/ingest/parksense/v1/+/+/+/telemetry",
        "$share/ingest/parksense/v1/+/+/+/status",
    ]
    assert legacy_subscription_filters(None)[0] == "parksense/v1/+/+/+/telemetry"


@pytest.mark.parametrize(
    ("topic", "platform"),
    [
        ("parksense/v1/hebi-tech/signals", True),
        ("parksense/v1/Hebi/signals", False),
        ("parksense/v1/hebi-tech/signals/extra", False),
        ("parksense/v1/hebi-tech/f01/signals", False),
        ("parksense/v2/hebi-tech/signals", False),
    ],
)
def test_only_a_parks_signals_topic_is_the_platforms(topic: str, platform: bool) -> None:
    """parksense/v1/{park_id}/signals with a valid park id is the platform's own topic."""
    assert is_platform_topic(topic) is platform
