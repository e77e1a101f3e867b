"""Refuse requests whose path or query holds a NUL or another control character (400).

Such characters cannot be stored (PostgreSQL text refuses NUL), cannot name a file, and
never appear in a legitimate id, metric or time, so they are refused once, here, before
any route, file lookup or query sees them.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.problems import send_problem

# C0 controls and DEL, decoded or percent-encoded.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _has_control(scope: Scope) -> bool:
    raw_path = scope.get("raw_path") or str(scope.get("path", "")).encode("utf-8", "replace")
    query = scope.get("query_string", b"")
    return any(
        _CONTROL.search(unquote_to_bytes(part.replace(b"+", b" "))) for part in (raw_path, query)
    )


class InputGuardMiddleware:
    """Answers 400 problem+json to a request with control characters in its path or query."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check HTTP requests."""
        if scope["type"] != "http" or not _has_control(scope):
            await self.app(scope, receive, send)
            return
        await send_problem(
            send,
            400,
            "Bad request",
            "the path or query holds a control character (such as NUL)",
            "",
        )
