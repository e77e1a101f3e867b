"""Content negotiation: which of the offered media types an ``Accept`` header prefers.

RFC 9110 §12.5.1: media ranges with optional ``q`` weights; ``type/*`` and ``*/*`` match
by type; ``q=0`` means "not acceptable"; a more specific range decides for a type over a
less specific one. Among types the client weighs equally, the server's order of offer
decides (the first offered is the default). The header is bounded before it is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

# Longer headers, or more ranges, are read only up to these bounds (browsers send ~200
# characters and fewer than ten ranges).
MAX_ACCEPT_CHARS = 2048
MAX_RANGES = 32


def _parse(header: str) -> list[tuple[str, str, float]]:
    """Return ``(type, subtype, q)`` per media range, malformed ranges skipped."""
    ranges: list[tuple[str, str, float]] = []
    for item in header[:MAX_ACCEPT_CHARS].split(",")[:MAX_RANGES]:
        media, *params = (part.strip() for part in item.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((kind, sub, q))
    return ranges


def _weight(offered: str, ranges: Sequence[tuple[str, str, float]]) -> float:
    """The q of the most specific range matching ``offered`` (0 when none matches)."""
    kind, _, sub = offered.partition("/")
    best: tuple[int, float] | None = None
    for r_kind, r_sub, q in ranges:
        if (r_kind, r_sub) == (kind, sub):
            specificity = 2
        elif r_kind == kind and r_sub == "*":
            specificity = 1
        elif (r_kind, r_sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return best[1] if best else 0.0


def negotiate(accept: str | None, offered: Sequence[str]) -> str | None:
    """Return the offered media type ``accept`` prefers, or None when it accepts none.

    No header (or an empty one, or one with no well-formed range) accepts anything: the
    first offered type is the answer.
    """
    ranges = _parse(accept) if accept else []
    if not ranges:
        return offered[0] if offered else None
    weights = [(_weight(media, ranges), -i, media) for i, media in enumerate(offered)]
    q, _, media = max(weights, default=(0.0, 0, ""))
    return media if q > 0 else None
