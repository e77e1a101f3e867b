"""Read a fleet file's text into plain data, safely: bounded size, nodes and depth, no aliases.

A fleet upload is hostile until validated. YAML aliases let 1.6 KB expand into gigabytes
(a "billion laughs"), so any alias or anchor is refused while the text is scanned as a
stream of parser events — before anything is built. The same scan counts nodes and
nesting, so neither a huge flat file nor a deeply nested one reaches the composer. JSON
(also valid YAML) takes the fast path through orjson, which has no aliases.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import yaml

# PyYAML's C parser (libyaml) when present: several times faster on a large fleet.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODE_START = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
_COLLECTION_START = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_COLLECTION_END = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


@dataclass(frozen=True, slots=True)
class FleetLimits:
    """How large a fleet file may be.

    The defaults fit 100,000 devices with room for thresholds: the demo generator's fleet
    of 100,000 devices is 6.2 MB and 570,000 YAML nodes (a device with an id and a type is
    5 nodes, one with two thresholds about 20).
    """

    max_bytes: int = 32 * 1024 * 1024
    max_nodes: int = 4_000_000
    # parks → factories → devices → thresholds → metric → bound is 12 levels deep.
    max_depth: int = 32


class FleetTextError(ValueError):
    """The fleet text is refused before it is read; ``reason`` says why in one word."""

    def __init__(self, reason: str, message: str) -> None:
        """Keep a machine-readable reason beside the message."""
        super().__init__(message)
        self.reason = reason


class FleetTooLargeError(FleetTextError):
    """The text is over a size, node or depth limit."""


def _text(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FleetTextError("encoding", f"fleet file is not UTF-8: {exc}") from exc
    return raw


def _scan(text: str, limits: FleetLimits) -> None:
    """Walk the YAML events once, refusing aliases, anchors and what is over the limits."""
    nodes = depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            where = f"line {event.start_mark.line + 1}" if event.start_mark else "the file"
            if isinstance(event, yaml.AliasEvent):
                raise FleetTextError(
                    "alias",
                    f"{where}: YAML aliases (*{event.anchor}) are not accepted in a fleet file;"
                    " write each value out",
                )
            if isinstance(event, _NODE_START):
                if event.anchor is not None:
                    raise FleetTextError(
                        "alias",
                        f"{where}: YAML anchors (&{event.anchor}) are not accepted in a fleet"
                        " file; write each value out",
                    )
                nodes += 1
                if nodes > limits.max_nodes:
                    raise FleetTooLargeError(
                        "nodes", f"fleet file has more than {limits.max_nodes} YAML nodes"
                    )
            if isinstance(event, _COLLECTION_START):
                depth += 1
                if depth > limits.max_depth:
                    raise FleetTooLargeError(
                        "depth", f"{where}: fleet file nests deeper than {limits.max_depth} levels"
                    )
            elif isinstance(event, _COLLECTION_END):
                depth -= 1
    except yaml.YAMLError as exc:
        raise FleetTextError("syntax", f"fleet file is not valid YAML or JSON: {exc}") from exc


def load_fleet_text(raw: str | bytes, limits: FleetLimits | None = None) -> object:
    """Return the plain data of a fleet file (YAML or JSON) within ``limits``.

    Raises:
        FleetTooLargeError: over the size, node or depth limit.
        FleetTextError: not UTF-8, not YAML, or uses aliases or anchors.
    """
    limits = limits or FleetLimits()
    if len(raw) > limits.max_bytes:
        raise FleetTooLargeError("bytes", f"fleet file is larger than {limits.max_bytes} bytes")
    text = _text(raw)
    if text.lstrip().startswith(("{", "[")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML flow style also starts with a brace; the YAML path judges it.
    _scan(text, limits)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader, after the scan
    except yaml.YAMLError as exc:
        raise FleetTextError("syntax", f"fleet file is not valid YAML or JSON: {exc}") from exc
