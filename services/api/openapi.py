"""The OpenAPI document, completed from the routes: problem responses and security.

Every operation documents the problems it can answer (``application/problem+json``):
400 (an untrusted Host, a control character, a parameter out of range), 422 (malformed
parameters or body) and, for operations behind ``require_scope``, 401, 403 and 503 with
the security schemes. A new route gets all of this by itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi import utils

from schemas.access import Problem
from services.api.auth import SCOPE_DEPENDENCIES, SESSION_COOKIE
from services.api.problems import PROBLEM_JSON
from services.core.api_keys import Scope

_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
}
_DESCRIPTIONS = {
    400: "Bad request: an untrusted Host, a control character, or a parameter out of range",
    401: "No valid API key or session",
    403: "The key's scope is too small",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "A parameter or the body is malformed",
    503: "The database is unreachable",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _scope_of(dependant: Dependant) -> Scope | None:
    for dep in dependant.dependencies:
        if dep.call in SCOPE_DEPENDENCIES:
            return SCOPE_DEPENDENCIES[dep.call]
        found = _scope_of(dep)
        if found is not None:
            return found
    return None


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def _complete(operation: dict[str, Any], scope: Scope | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes = {400, 422}
    if scope is not None:
        codes |= {401, 403, 503}
        operation["security"] = [{name: []} for name in _SECURITY_SCHEMES]
        operation["description"] = (
            operation.get("description", "") + f"\n\nNeeds the `{scope.value}` scope."
        ).strip()
    codes |= {int(code) for code in responses if code.isdigit() and int(code) >= 400}  # noqa: PLR2004 - HTTP error classes
    for code in sorted(codes):
        existing = responses.get(str(code), {})
        description = existing.get("description") or _DESCRIPTIONS.get(code, "Error")
        responses[str(code)] = _problem(description)


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = utils.get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        components["securitySchemes"] = _SECURITY_SCHEMES
        # FastAPI keeps included routers as nested route contexts; walk them as its own
        # document builder does.
        for context in routing.iter_route_contexts(app.routes):
            route = utils._get_api_route_for_openapi(context)  # noqa: SLF001 - the builder's own lookup
            if route is None or not route.include_in_schema:
                continue
            scope = _scope_of(route.dependant)
            path = document["paths"].get(route.path_format, {})
            for method in route.methods or ():
                operation = path.get(method.lower())
                if operation is not None:
                    _complete(operation, scope)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign] # FastAPI's documented way to customise the document
