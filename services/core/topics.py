"""Parse and format ``parksense/v1/{park}/{factory}/{device}/{channel}`` topics."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from schemas.telemetry import ID_PATTERN, TOPIC_ROOT

_ID = re.compile(ID_PATTERN)


class Channel(StrEnum):
    """What a device publishes on a topic."""

    TELEMETRY = "telemetry"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """The ids a topic names."""

    park_id: str
    factory_id: str
    device_id: str
    channel: Channel


def parse_topic(topic: str) -> TopicAddress | None:
    """Return the address a topic names, or None when it is not a parksense v1 topic."""
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:  # noqa: PLR2004
        return None
    park_id, factory_id, device_id, channel = parts[2:]
    if not all(_ID.fullmatch(part) for part in (park_id, factory_id, device_id)):
        return None
    try:
        return TopicAddress(park_id, factory_id, device_id, Channel(channel))
    except ValueError:
        return None


def subscription_filters(share_group: str | None) -> list[str]:
    """Return the topic filters ingest subscribes to, shared when a group is given."""
    filters = [f"{TOPIC_ROOT}/+/+/+/{channel}" for channel in Channel]
    if share_group:
        return [f"$share/{share_group}/{f}" for f in filters]
    return filters
