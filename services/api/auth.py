"""API keys: when keys are configured, every ``/v1`` request must carry one."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = b"x-api-key"
# EventSource cannot send headers, so the live stream also accepts ?api_key=.
API_KEY_PARAM = "api_key"
PROTECTED_PREFIX = "/v1/"


class ApiKeyMiddleware:
    """Refuses ``/v1`` requests without a valid key (401 problem+json)."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        """Wrap ``app``; an empty key set lets every request through."""
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key of HTTP requests under ``/v1``."""
        if (
            not self.keys
            or scope["type"] != "http"
            or not str(scope.get("path", "")).startswith(PROTECTED_PREFIX)
            or self._authorised(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Unauthorized",
                "status": 401,
                "detail": "send a valid API key in the X-API-Key header (or ?api_key=)",
                "instance": scope.get("path", ""),
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"ApiKey"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        offered = [value for name, value in scope.get("headers", []) if name == API_KEY_HEADER]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        offered += [v.encode() for v in query.get(API_KEY_PARAM, [])]
        return any(hmac.compare_digest(o, key) for o in offered for key in self.keys)
