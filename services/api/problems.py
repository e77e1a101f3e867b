"""Errors as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Raised by routes and queries to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,  # noqa: ANN401 - extension members are free-form JSON
    ) -> None:
        """Create a problem with an HTTP status, a short title and a specific detail."""
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(kind: str, ident: str) -> ProblemError:
    """Return the problem for an unknown id."""
    return ProblemError(404, f"Unknown {kind}", f"{kind} {ident!r} does not exist")


def bad_request(detail: str) -> ProblemError:
    """Return the problem for a bad parameter."""
    return ProblemError(400, "Bad request", detail)


async def send_problem(send: Send, status: int, title: str, detail: str, instance: str) -> None:
    """Answer a problem+json from an ASGI middleware, before any route runs."""
    body = orjson.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail,
         "instance": instance}
    )  # fmt: skip
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def aware(ts: datetime, name: str) -> datetime:
    """Return a query parameter's time in UTC; a time without an offset is a bad request."""
    if ts.tzinfo is None:
        raise bad_request(f"{name} must carry a UTC offset, e.g. 2026-11-26T10:00:00Z")
    return ts.astimezone(UTC)


def time_range(
    start: datetime | None, end: datetime | None, *, default_span: timedelta
) -> tuple[datetime, datetime]:
    """A request's ``[start, end)`` in UTC: ``end`` now and ``start`` ``default_span`` before it.

    Raises:
        ProblemError: 400, a time without an offset, or ``start`` not before ``end``.
    """
    end_ts = aware(end, "end") if end else datetime.now(UTC)
    start_ts = aware(start, "start") if start else end_ts - default_span
    if start_ts >= end_ts:
        raise bad_request("start must be before end")
    return start_ts, end_ts


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,  # noqa: ANN401 - extension members are free-form JSON
) -> JSONResponse:
    """Return a problem document as a response."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {})
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)  # noqa: S101 - registered for this type only
    return problem_response(
        request, exc.status, exc.title, exc.detail, exc.headers or None, **exc.extra
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method the documented paths allow at this request's path (RFC 9110 §10.2.1).

    Starlette names only the methods of the first route that matched the path, so a path
    served by two routes (GET and POST) would answer a 405 with half its methods.
    """
    document: dict[str, Any] = request.app.openapi()
    methods: set[str] = set()
    for template, operations in document.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in _HTTP_METHODS}
    return ", ".join(sorted(methods)) if methods else None


_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"})


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    title = HTTPStatus(exc.status_code).phrase
    # 405 keeps its Allow header (RFC 9110 §15.5.6), 401 its challenge.
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = _allowed_methods(request)
        if allowed is not None:
            headers["Allow"] = allowed
    return problem_response(request, exc.status_code, title, str(exc.detail), headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return problem_response(request, 422, "Invalid request", detail, errors=errors)


async def _on_out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # OverflowError (date arithmetic past year 9999) and psycopg's DataError (SQLSTATE
    # class 22, or a value such as a year-0 timestamp psycopg cannot represent) come
    # from what the client asked for.
    logger.info("Out-of-range request to %s: %s", request.url.path, type(exc).__name__)
    return problem_response(
        request, 400, "Bad request", "a parameter is out of the range this API can compute"
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("Unexpected error in %s", request.url.path, exc_info=exc)
    return problem_response(request, 500, "Internal Server Error", "an unexpected error; see logs")


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(OverflowError, _on_out_of_range)
    app.add_exception_handler(psycopg.DataError, _on_out_of_range)
    app.add_exception_handler(Exception, _on_unexpected)
