"""The object-store interface every adapter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imagesmith.config import Settings


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str


class ObjectStore(Protocol):
    """Keys look like `{org}/{project}/img/{imageId}`; writes replace the object atomically."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> StoredObject | None: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def describe(self) -> str: ...


def open_store(settings: Settings) -> ObjectStore:
    from imagesmith.storage.local import LocalStore

    return LocalStore(settings.resolved_storage_dir)


def image_key(org_slug: str, project_slug: str, image_id: str) -> str:
    return f"{org_slug}/{project_slug}/img/{image_id}"
