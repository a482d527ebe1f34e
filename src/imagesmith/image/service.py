"""Image library rules shared by every dialect: store validated bytes as a project image."""

from __future__ import annotations

import hashlib
from typing import Any

from imagesmith.auth.service import Principal
from imagesmith.db.base import new_id
from imagesmith.generation.repository import GenerationRepository
from imagesmith.image.validation import ImageInfo, inspect_image
from imagesmith.models import Image, ImageSource
from imagesmith.runtime import Runtime
from imagesmith.storage.base import image_key


class ImageService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    async def save_upload(
        self, principal: Principal, data: bytes, meta: dict[str, Any] | None = None
    ) -> tuple[Image, ImageInfo]:
        """Validate (by content, pixel budget, full decode), store, and record an upload."""
        info = inspect_image(data)
        project_id = principal.require_project()
        assert principal.organization_slug and principal.project_slug
        image_id = new_id()
        key = image_key(principal.organization_slug, principal.project_slug, image_id)
        await self.rt.store.put(key, data, info.mime_type)
        image = Image(
            id=image_id,
            project_id=project_id,
            storage_key=key,
            mime_type=info.mime_type,
            width=info.width,
            height=info.height,
            file_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            source=ImageSource.UPLOADED,
            meta=dict(meta or {}),
        )
        async with self.rt.db.transaction() as session:
            await GenerationRepository(session).add_image(image)
        return image, info
