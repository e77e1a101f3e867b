"""Errors as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Raised by routes and queries to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:  # noqa: ANN401 - extension members are free-form JSON
        """Create a problem with an HTTP status, a short title and a specific detail."""
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def not_found(kind: str, ident: str) -> ProblemError:
    """Return the problem for an unknown id."""
    return ProblemError(404, f"Unknown {kind}", f"{kind} {ident!r} does not exist")


def bad_request(detail: str) -> ProblemError:
    """Return the problem for a bad parameter."""
    return ProblemError(400, "Bad request", detail)


def aware(ts: datetime, name: str) -> datetime:
    """Return a query parameter's time in UTC; a time without an offset is a bad request."""
    if ts.tzinfo is None:
        raise bad_request(f"{name} must carry a UTC offset, e.g. 2026-11-26T10:00:00Z")
    return ts.astimezone(UTC)


def _problem(request: Request, status: int, title: str, detail: str, **extra: Any) -> JSONResponse:  # noqa: ANN401 - extension members are free-form JSON
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)  # noqa: S101 - registered for this type only
    return _problem(request, exc.status, exc.title, exc.detail, **exc.extra)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    title = HTTPStatus(exc.status_code).phrase
    return _problem(request, exc.status_code, title, str(exc.detail))


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
    return _problem(request, 422, "Invalid request", detail, errors=errors)


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
