"""The browser playground at `/` and `/playground`: static files from the package, with a
strict Content-Security-Policy (scripts and styles from this server only; images also from
the store's own URLs when storage links are presigned or public)."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import Response

from imagesmith.api.deps import RuntimeDep
from imagesmith.config import Settings
from imagesmith.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def image_sources(settings: Settings) -> str:
    """Where the playground may load images from: this server (/cdn), and the store itself
    when storageUrl links are presigned or public."""
    sources = ["'self'", "data:", "blob:"]
    if settings.storage_url_mode == "public" and settings.storage_public_base_url:
        parts = urlsplit(settings.storage_public_base_url)
        sources.append(f"{parts.scheme}://{parts.netloc}")
    elif settings.storage_url_mode == "presigned":
        if settings.aws_endpoint_url:
            parts = urlsplit(settings.aws_endpoint_url)
            sources += [f"{parts.scheme}://{parts.netloc}", f"{parts.scheme}://*.{parts.netloc}"]
        else:
            sources.append("https://*.amazonaws.com")
    return " ".join(sources)


def headers(settings: Settings) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {image_sources(settings)}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'; object-src 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def asset(name: str, settings: Settings) -> Response:
    if name not in ASSETS:
        raise NotFound(f"No playground file '{name[:64]}'")
    body = resources.files("imagesmith.playground").joinpath(name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=headers(settings))


@router.get("/")
async def home(runtime: RuntimeDep) -> Response:
    return asset("index.html", runtime.settings)


@router.get("/playground")
async def playground(runtime: RuntimeDep) -> Response:
    return asset("index.html", runtime.settings)


@router.get("/playground/{name}")
async def playground_file(runtime: RuntimeDep, name: str) -> Response:
    return asset(name, runtime.settings)
