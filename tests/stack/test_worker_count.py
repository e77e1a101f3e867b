"""`parksense up` with another worker count moves parks between workers without a gap."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest

from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.core.access import PlatformRole
from services.stack.stack import Stack, platform_mqtt_settings
from tests.harness.environment import free_port, make_temp_dir
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


def free_port_pair() -> int:
    """Return a port p such that p and p + 1 can both be bound (workers 1 and 2 metrics)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A local stack with one ingest worker in a temporary state folder; stopped afterwards."""
    base = make_temp_dir("parksense-test-workers-")
    local = Stack(
        StackSettings(
            state_dir=base / "state", ingest_workers=1, ingest_metrics_base_port=free_port_pair()
        ),
        DatabaseSettings(port=free_port()),
        MqttSettings(port=free_port()),
        ApiSettings(port=free_port()),
    )
    try:
        yield local
    finally:
        local.down()
        shutil.rmtree(base, ignore_errors=True)


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
