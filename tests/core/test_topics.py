"""Topics: parse the v1 contract, build the subscription filters."""

from __future__ import annotations

import pytest

from services.core.topics import Channel, TopicAddress, parse_topic, subscription_filters


def test_telemetry_topic_is_parsed() -> None:
    """A v1 telemetry topic names a park, a factory and a device."""
    assert parse_topic("parksense/v1/hebi-tech/f01/f01-meter-1/telemetry") == TopicAddress(
        "hebi-tech", "f01", "f01-meter-1", Channel.TELEMETRY
    )


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


def test_shared_subscription_filters() -> None:
    """Workers share both channels through one group."""
    assert subscription_filters("ingest") == [
        "$share/ingest/parksense/v1/+/+/+/telemetry",
        "$share/ingest/parksense/v1/+/+/+/status",
    ]
    assert subscription_filters(None)[0] == "parksense/v1/+/+/+/telemetry"
