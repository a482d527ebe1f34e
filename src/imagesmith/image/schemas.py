"""What callers ask of the image library."""

from __future__ import annotations

from dataclasses import dataclass

from imagesmith.models import ImageSource


@dataclass(frozen=True)
class ImageFilter:
    flow_id: str | None = None
    source: ImageSource | None = None
    alias: str | None = None
    include_deleted: bool = False
    limit: int = 20
    offset: int = 0
