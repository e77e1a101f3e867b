"""The stack tests' local stack: a temporary state folder on free ports, stopped afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.stack.stack import Stack
from tests.harness.environment import free_port, free_port_pair, make_temp_dir


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A whole local stack with one ingest worker; the metrics ports of workers 1 and 2 free."""
    base = make_temp_dir("parksense-test-stack-")
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
