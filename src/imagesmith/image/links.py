"""Where clients fetch images, and how timestamps are written: shared by every dialect and
by webhook payloads (which have no request to take an address from)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imagesmith.models import Image
from imagesmith.storage import ObjectStore


@dataclass(frozen=True)
class ImageLinks:
    """The server's /cdn route, or the store's own URL if configured."""

    base: str
    store: ObjectStore

    def url(self, image: Image, org_slug: str, project_slug: str) -> str:
        direct = self.store.public_url(image.storage_key)
        return direct or f"{self.base}/cdn/{org_slug}/{project_slug}/img/{image.id}"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a `Z`, as the seed products write it."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
