"""The operators' dashboard: ``GET /`` and its assets under ``/static/``, served by the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from services.api.problems import not_found

router = APIRouter(tags=["dashboard"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Assets are revalidated on every load (a 304 when unchanged), so a new release is seen at
# once without fingerprinted file names or a build step.
_CACHE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".woff2": "font/woff2",
}


def static_file(relative: str) -> Path | None:
    """Return the asset at ``relative`` inside the static folder, or None.

    Only regular files of a known type inside the folder are served: ``..``, absolute
    paths and symbolic links out of the folder resolve elsewhere and are refused.
    """
    root = STATIC_DIR.resolve()
    try:
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):
        # A NUL byte, a lone surrogate or a name too long for the file system.
        return None
    if candidate.suffix not in _MEDIA_TYPES:
        return None
    return candidate


@router.get("/", summary="The operators' dashboard")
async def dashboard() -> FileResponse:
    """The single-page dashboard; it reads everything else from the API."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_CACHE_HEADERS
    )


@router.get("/static/{asset:path}", summary="A dashboard asset")
async def asset(asset: Annotated[str, PathParam(max_length=200)]) -> FileResponse:
    """A script, stylesheet or image of the dashboard."""
    path = static_file(asset)
    if path is None:
        raise not_found("asset", asset)
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_CACHE_HEADERS)
