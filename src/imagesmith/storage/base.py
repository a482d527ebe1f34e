"""The object-store interface every adapter implements."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagesmith.config import Settings

log = logging.getLogger(__name__)


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

    async def check(self) -> None:
        """Raise when the store cannot be used (readiness)."""
        ...

    def public_url(self, key: str) -> str | None:
        """A direct URL (presigned or public bucket) when configured; None → serve via /cdn."""
        ...

    def describe(self) -> str: ...


def open_store(settings: Settings) -> ObjectStore:
    if settings.storage_url and settings.storage_url.startswith("s3://"):
        from imagesmith.storage.s3 import S3Store

        return S3Store(settings)
    from imagesmith.storage.local import LocalStore

    if settings.storage_url and settings.storage_url.startswith("file://"):
        return LocalStore(Path(settings.storage_url.removeprefix("file://")).resolve())
    if settings.storage_url:
        raise ValueError(
            f"IMAGESMITH_STORAGE_URL must start with s3:// or file://, got {settings.storage_url!r}"
        )
    return LocalStore(settings.resolved_storage_dir)


def image_key(org_slug: str, project_slug: str, image_id: str, attempt: str | None = None) -> str:
    """Where an image's bytes live. A generated image is written under a key of its own per
    attempt (`<id>.<attempt>`), and the row is pointed at it in the transaction that records
    the success: a stale attempt can then never overwrite the bytes of the run that won."""
    base = f"{org_slug}/{project_slug}/img/{image_id}"
    return f"{base}.{attempt}" if attempt else base


async def delete_quietly(store: ObjectStore, keys: list[str]) -> None:
    """Delete objects nothing points at any more; a failure leaves a harmless orphan, logged."""
    for key in keys:
        try:
            await store.delete(key)
        except Exception as exc:
            log.warning("object.delete_failed key=%s error=%r", key, exc)


def preview_key(org_slug: str, project_slug: str, generation_id: str, index: int) -> str:
    """Where a generation's partial image number `index` lives (a re-run writes over it)."""
    return f"{org_slug}/{project_slug}/preview/{generation_id}/{index}"


def preview_keys(org_slug: str, project_slug: str, generation_id: str, count: int) -> list[str]:
    return [preview_key(org_slug, project_slug, generation_id, i) for i in range(count)]
