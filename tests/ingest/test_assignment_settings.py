"""Ingest's assignment settings: parks by default, share with a group, nonsense refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.config import IngestSettings
from services.core.assignment import Assignment, WorkerSlot


def test_parks_is_the_default_and_the_slot_comes_from_the_settings() -> None:
    """Without a share group, worker i of N takes its factories."""
    settings = IngestSettings(workers=3, worker_index=2)
    assert settings.assignment is Assignment.PARKS
    assert settings.slot == WorkerSlot(2, 3)


def test_a_share_group_alone_means_share() -> None:
    """A share group without an assignment keeps the deployments that set only the group."""
    assert IngestSettings(share_group="parksense").assignment is Assignment.SHARE
    assert IngestSettings(share_group="").share_group is None


@pytest.mark.parametrize(
    "fields",
    [
        {"assignment": "share"},
        {"assignment": "parks", "share_group": "g"},
        {"assignment": "hash"},
        {"worker_index": 0},
        {"workers": 0},
    ],
)
def test_contradictory_assignment_settings_are_refused(fields: dict[str, object]) -> None:
    """Share without a group, a group with parks, an unknown mode or index 0 is refused."""
    with pytest.raises(ValidationError):
        IngestSettings(**fields)  # type: ignore[arg-type]  # untyped on purpose: bad input
