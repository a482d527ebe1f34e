"""Image links for a request: the configured public URL, or the address the request came in
on. (ImageLinks and iso live in the core: webhook payloads use them too.)"""

from __future__ import annotations

from fastapi import Request

from imagesmith.image.links import ImageLinks, iso
from imagesmith.runtime import Runtime

__all__ = ["ImageLinks", "image_links", "iso"]


def image_links(request: Request, runtime: Runtime) -> ImageLinks:
    base = (runtime.settings.public_url or str(request.base_url)).rstrip("/")
    return ImageLinks(base, runtime.store)
