"""Content negotiation by ``Accept``: JSON by default, CSV when asked, nothing when refused."""

from __future__ import annotations

import pytest

from services.core.media import MAX_ACCEPT_CHARS, negotiate

OFFERED = ("application/json", "text/csv")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/csv", "text/csv"),
        ("TEXT/CSV; charset=utf-8", "text/csv"),
        ("text/*", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("text/csv, application/json;q=0.9", "text/csv"),
        ("text/csv, application/json", "application/json"),
        ("text/html, */*;q=0.1", "application/json"),
        ("*/*;q=0.5, text/csv", "text/csv"),
        ("*/*, application/json;q=0", "text/csv"),
        ("text/html", None),
        ("application/xml, image/png", None),
        ("text/csv;q=0, application/json;q=0", None),
        ("text/csv;q=oops", None),
        ("garbage", "application/json"),
    ],
)
def test_negotiate_picks_the_preferred_offered_type(accept: str | None, chosen: str) -> None:
    """Weights, wildcards and specificity decide; equal weights go to the first offered."""
    assert negotiate(accept, OFFERED) == chosen


def test_negotiate_reads_a_huge_header_only_up_to_its_bound() -> None:
    """Ranges past the character bound are not read (a CSV range beyond it does not count)."""
    header = "text/html," * (MAX_ACCEPT_CHARS // 10) + "text/csv"
    assert negotiate(header, OFFERED) is None
