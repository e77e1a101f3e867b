"""uvicorn with limits: a request-header deadline, bounded headers, and logs without secrets.

uvicorn's keep-alive timeout starts only after a first response, and any byte received
resets it, so a client that opens a connection and trickles (or never sends) its headers
holds it forever. ``header_deadline_protocol`` closes a connection whose request headers
are not complete ``header_timeout_s`` after it opened or after its previous response.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import h11
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

# Request line and headers together; h11's default (16 KiB) is kept explicit here.
MAX_HEADER_BYTES = 16 * 1024
# Query parameters whose values never reach a log, should a client send one.
_SECRET_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token", "password",
                            "secret", "session"})  # fmt: skip
# Keys and session tokens are made with these prefixes (services.core.access).
_SECRET_TEXT = re.compile(r"\b(ps[ks]_)[A-Za-z0-9_-]{8,}")
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """Return ``text`` with anything that looks like a parksense key or token replaced."""
    return _SECRET_TEXT.sub(rf"\g<1>{REDACTED}", text)


def redact_target(target: str) -> str:
    """Return a request target (path and query) with secret-named query values replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return redact(path)
    pairs = [
        (name, REDACTED if name.lower() in _SECRET_PARAMS else value)
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return redact(f"{path}?{urlencode(pairs)}")


class SecretRedactingFilter(logging.Filter):
    """Rewrites log records so that no key, token or secret query value is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's arguments (uvicorn's access line) and its message."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_target(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """Return uvicorn's logging configuration with the redacting filter on every handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": f"{__name__}.SecretRedactingFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    return config


def header_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """Return uvicorn's h11 protocol with a deadline for each request's headers."""

    class HeaderDeadlineProtocol(H11Protocol):
        """H11Protocol that closes connections slow to send their request headers."""

        def connection_made(self, transport: Any) -> None:  # noqa: ANN401 - uvicorn's signature
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self.loop.call_later(header_timeout_s, self._header_deadline_passed, self.cycle)

        def _header_deadline_passed(self, cycle_when_armed: object) -> None:
            # A new request has started when the cycle changed; otherwise the headers are late.
            if self.cycle is not cycle_when_armed or self.transport.is_closing():
                return
            if self.conn.our_state in {h11.IDLE, h11.DONE} or self.cycle is None:
                self.transport.close()

    return HeaderDeadlineProtocol
