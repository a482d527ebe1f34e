"""Where clients fetch images, and how timestamps are written: shared by every dialect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import Request

from imagesmith.models import Image
from imagesmith.runtime import Runtime
from imagesmith.storage import ObjectStore


@dataclass(frozen=True)
class ImageLinks:
    """The server's /cdn route, or the store's own URL if configured."""

    base: str
    store: ObjectStore

    def url(self, image: Image, org_slug: str, project_slug: str) -> str:
        direct = self.store.public_url(image.storage_key)
        return direct or f"{self.base}/cdn/{org_slug}/{project_slug}/img/{image.id}"


def image_links(request: Request, runtime: Runtime) -> ImageLinks:
    base = (runtime.settings.public_url or str(request.base_url)).rstrip("/")
    return ImageLinks(base, runtime.store)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a `Z`, as the seed products write it."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
