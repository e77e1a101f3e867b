"""`parksense up` with another worker count moves parks between workers without a gap."""

from __future__ import annotations

import pytest

from services.core.access import PlatformRole
from services.stack.stack import Stack, platform_mqtt_settings
from tests.harness.ingest import (
    Background,
    ParksFleet,
    assert_exactly_stored,
    make_messages,
    publish_concurrently,
    unique_prefix,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

READINGS = 30_000
PUBLISHERS = 2


def with_workers(stack: Stack, count: int) -> Stack:
    """The same stack, configured with ``count`` ingest workers."""
    settings = stack.settings.model_copy(update={"ingest_workers": count})
    return Stack(settings, stack.db, stack.mqtt, stack.api)


def log_of(stack: Stack, name: str) -> str:
    return (stack.logs_dir / f"{name}.log").read_text(encoding="utf-8")


def test_scaling_up_and_down_mid_stream_loses_nothing(stack: Stack) -> None:
    """1 → 2 → 1 workers while publishing: every reading stored once; worker 2 retires."""
    stack.up()
    conninfo = stack.db.conninfo()
    fleet = ParksFleet(unique_prefix(), workers=2)
    fleet.load(conninfo)
    publisher = platform_mqtt_settings(stack.state_dir, PlatformRole.SIMULATOR, stack.mqtt)
    messages, expected = make_messages(fleet, READINGS)
    first, second, third = (messages[i::3] for i in range(3))
    publish_concurrently(publisher, first, PUBLISHERS)

    two = with_workers(stack, 2)
    publishing = Background(lambda: publish_concurrently(publisher, second, PUBLISHERS))
    assert two.up() == ["ingest-2", "ingest-1"]  # the new owner first, then the old one
    publishing.join()
    assert "Subscribed as worker 1 of 2 (parks assignment): 4 filters" in log_of(two, "ingest-1")
    assert "Subscribed as worker 2 of 2 (parks assignment): 4 filters" in log_of(two, "ingest-2")

    one = with_workers(stack, 1)
    publishing = Background(lambda: publish_concurrently(publisher, third, PUBLISHERS))
    assert one.up() == ["ingest-1"]
    publishing.join()
    assert "Subscribed as worker 2 of 1 (parks assignment): 0 filters" in log_of(one, "ingest-2")
    assert [row.name for row in one.status() if row.name.startswith("ingest")] == ["ingest-1"]
    assert_exactly_stored(conninfo, fleet, expected)
