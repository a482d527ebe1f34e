"""The browser playground at `/` and `/playground`: static files from the package, with a
strict Content-Security-Policy (scripts and styles from this server only; images also from
the store's own URLs when storage links are presigned or public)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from imagesmith.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob: http: https:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"No playground file '{name[:64]}'")
    body = resources.files("imagesmith.playground").joinpath(name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=HEADERS)


@router.get("/")
async def home() -> Response:
    return asset("index.html")


@router.get("/playground")
async def playground() -> Response:
    return asset("index.html")


@router.get("/playground/{name}")
async def playground_file(name: str) -> Response:
    return asset(name)
