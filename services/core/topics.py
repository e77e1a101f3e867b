"""Parse ``parksense/v1/{park}/{factory}/{device}/{channel}`` topics; ingest's filters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from schemas.telemetry import ID_PATTERN, TOPIC_ROOT
from services.core.sparkplug_payload import NAMESPACE as SPARKPLUG_NAMESPACE

_ID = re.compile(ID_PATTERN)
# The last level of the topic on which the platform publishes a park's signals.
SIGNALS_CHANNEL = "signals"


class Channel(StrEnum):
    """What a device publishes on a topic."""

    TELEMETRY = "telemetry"
    STATUS = "status"


_CHANNELS = {channel.value: channel for channel in Channel}
# A device's topic in one match (cheaper per message than splitting and matching each id).
_ID_BODY = ID_PATTERN.removeprefix("^").removesuffix("$")
_DEVICE_TOPIC = re.compile(
    f"{re.escape(TOPIC_ROOT)}/({_ID_BODY})/({_ID_BODY})/({_ID_BODY})/({'|'.join(_CHANNELS)})"
)


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """The ids a topic names."""

    park_id: str
    factory_id: str
    device_id: str
    channel: Channel


# The addresses of valid topics seen, by topic: a fleet publishes on the same topics over
# and over, and a look-up costs a twentieth of a match and a frozen dataclass. Emptied when it
# holds this many (a valid topic is at most about 220 characters, so this bounds its memory
# whatever topics arrive; invalid topics are never kept).
_KNOWN_TOPICS_MAX = 65_536
_known_topics: dict[str, TopicAddress] = {}


def parse_topic(topic: str) -> TopicAddress | None:
    """Return the address a topic names, or None when it is not a parksense v1 topic."""
    address = _known_topics.get(topic)
    if address is not None:
        return address
    match = _DEVICE_TOPIC.fullmatch(topic)
    if match is None:
        return None
    park_id, factory_id, device_id, channel = match.groups()
    address = TopicAddress(park_id, factory_id, device_id, _CHANNELS[channel])
    if len(_known_topics) >= _KNOWN_TOPICS_MAX:
        _known_topics.clear()
    _known_topics[topic] = address
    return address


def signals_topic(park_id: str) -> str:
    """Return the topic on which the platform shares a park's signals (PRODUCT.md "Sharing")."""
    return f"{TOPIC_ROOT}/{park_id}/{SIGNALS_CHANNEL}"


def is_platform_topic(topic: str) -> bool:
    """Whether the platform itself publishes on ``topic``, so ingest ignores it.

    ``parksense/v1/{park_id}/signals`` carries a park's signals to downstream readers
    (PRODUCT.md "Sharing"); it lies under ingest's subscription, but it is no device's
    data, so it is neither stored nor dead-lettered.
    """
    parts = topic.split("/")
    return (
        len(parts) == 4  # noqa: PLR2004 - parksense / v1 / park / signals
        and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT
        and parts[3] == SIGNALS_CHANNEL
        and _ID.fullmatch(parts[2]) is not None
    )


def subscription_filters(share_group: str | None) -> list[str]:
    """Return the topic filters ingest subscribes to, shared when a group is given.

    Everything under the root, so that a message on a topic outside the contract (an extra
    level, an unknown channel) becomes a ``bad_topic`` dead letter instead of going unseen;
    likewise everything in the Sparkplug B namespace.
    """
    filters = [f"{TOPIC_ROOT}/#", f"{SPARKPLUG_NAMESPACE}/#"]
    if share_group:
        return [f"$share/{share_group}/{f}" for f in filters]
    return filters


def legacy_subscription_filters(share_group: str | None) -> list[str]:
    """Filters earlier versions of ingest subscribed to, removed from a persistent session.

    A persistent session keeps its subscriptions across restarts; with these still there
    beside the root filter, shared subscriptions would deliver each message twice.
    """
    filters = [f"{TOPIC_ROOT}/+/+/+/{channel}" for channel in Channel]
    if share_group:
        return [f"$share/{share_group}/{f}" for f in filters]
    return filters
