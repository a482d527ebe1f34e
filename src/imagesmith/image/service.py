"""Image library rules shared by every dialect: uploads, lookups by id or alias, focal point and
meta, alias assignment, delete with every reference cleaned up."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from imagesmith.auth.service import Principal
from imagesmith.db.base import new_id, utcnow
from imagesmith.errors import AliasConflict, ImageNotFound, ValidationFailed
from imagesmith.image.aliases import resolve_image
from imagesmith.image.names import NEW_FLOW, RESERVED_ALIASES, check_alias
from imagesmith.image.repository import ImageRepository
from imagesmith.image.schemas import ImageFilter
from imagesmith.image.validation import ImageInfo, inspect_image
from imagesmith.limits.credits import Credits, InsufficientCredits
from imagesmith.models import Flow, Image, ImageSource
from imagesmith.runtime import Runtime
from imagesmith.storage.base import delete_quietly, image_key


class ImageService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    async def save_upload(
        self,
        principal: Principal,
        data: bytes,
        meta: dict[str, Any] | None = None,
        *,
        alias: str | None = None,
        flow_id: str | None = None,
        flow_alias: str | None = None,
        require_credit: bool = False,
        info: ImageInfo | None = None,
    ) -> tuple[Image, ImageInfo]:
        """Validate (by content, pixel budget, full decode), store, and record an upload.
        `flow_id` follows the generation rule: NEW_FLOW → a new flow, None → no flow.
        `require_credit`: refuse while the project has no credits left (uploads meant as
        init images: storage is not free either). `info`: the bytes were inspected already."""
        project_id = principal.require_project()
        if require_credit:
            async with self.rt.db.transaction() as session:
                if not await Credits(session).has_credit(project_id):
                    raise InsufficientCredits("Uploading needs credits left")
        # Before anything is stored; decoding is CPU work, so it runs off the event loop.
        if info is None:
            info = await asyncio.to_thread(inspect_image, data)
        assert principal.organization_slug and principal.project_slug
        if alias is not None:
            check_alias_value(alias, "alias")
        if flow_alias is not None:
            check_alias_value(flow_alias, "flowAlias")
        if flow_id == NEW_FLOW:
            flow_id = str(uuid.uuid4())
        image_id = new_id()
        key = image_key(principal.organization_slug, principal.project_slug, image_id)
        image = Image(
            id=image_id,
            project_id=project_id,
            flow_id=flow_id,
            storage_key=key,
            mime_type=info.mime_type,
            width=info.width,
            height=info.height,
            file_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            source=ImageSource.UPLOADED,
            alias=alias,
            meta=dict(meta or {}),
        )
        taken = AliasConflict(f"Alias '{alias}' is already used by another image")
        # Stored before the write, which it would hold for an S3 round trip; removed again if
        # the write fails (two uploads racing for one alias: the loser gets a 409, not a 500).
        await self.rt.store.put(key, data, info.mime_type)
        try:
            async with self.rt.db.transaction() as session:
                repo = ImageRepository(session)
                if alias is not None and await repo.by_alias(project_id, alias) is not None:
                    raise taken
                if flow_id is not None:
                    flow = await ensure_flow(repo, project_id, flow_id)
                    if flow_alias is not None:
                        flow.aliases = {**(flow.aliases or {}), flow_alias: image_id}
                await repo.add(image)
        except Exception as exc:
            await delete_quietly(self.rt.store, [key])
            if isinstance(exc, IntegrityError) and alias is not None:
                raise taken from None
            raise
        return image, info

    async def inspect_all(self, files: list[bytes]) -> list[ImageInfo]:
        """Validate several uploads before any is stored (off the event loop)."""
        return [await asyncio.to_thread(inspect_image, data) for data in files]

    async def save_uploads(
        self,
        principal: Principal,
        files: list[bytes],
        infos: list[ImageInfo],
        meta: dict[str, Any],
    ) -> list[Image]:
        """Store several uploads, already validated by `inspect_all` (so a bad one left nothing
        stored), as library images with no flow."""
        saved = []
        for data, info in zip(files, infos, strict=True):
            image, _info = await self.save_upload(principal, data, meta, flow_id=None, info=info)
            saved.append(image)
        return saved

    async def forget(self, images: list[Image]) -> None:
        """Remove images stored for a request that was then refused."""
        for image in images:
            await self.delete(image.project_id, image.id)

    async def get(self, project_id: str, ref: str, flow_id: str | None = None) -> Image:
        async with self.rt.db.read() as session:
            image = await resolve_image(ImageRepository(session), project_id, ref, flow_id)
        if image is None:
            raise ImageNotFound(f"No image '{ref}' in this project")
        return image

    async def get_public(self, project_id: str, ref: str) -> Image:
        """For public URLs: an image id or a project alias someone chose to publish. Computed
        aliases (@last, @first, @upload) would hand a stranger the project's newest private
        image, so they never resolve here."""
        if ref.strip() in RESERVED_ALIASES:
            raise ImageNotFound(f"No public image '{ref}': computed aliases need an API key")
        return await self.get(project_id, ref)

    async def page(self, project_id: str, filters: ImageFilter) -> tuple[list[Image], int]:
        async with self.rt.db.read() as session:
            return await ImageRepository(session).page(project_id, filters)

    async def update(self, project_id: str, ref: str, changes: dict[str, Any]) -> Image:
        """Only focalPoint and meta change here; content and alias have their own routes."""
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            image = await resolve_image(repo, project_id, ref)
            if image is None:
                raise ImageNotFound(f"No image '{ref}' in this project")
            if "focal_point" in changes:
                image.focal_point = changes["focal_point"]
            if changes.get("meta") is not None:
                image.meta = dict(changes["meta"])
            image.updated_at = utcnow()
            await session.flush()
            return image

    async def set_alias(self, project_id: str, ref: str, alias: str | None) -> Image:
        if alias is not None:
            check_alias_value(alias, "alias")
        try:
            async with self.rt.db.transaction() as session:
                repo = ImageRepository(session)
                image = await resolve_image(repo, project_id, ref)
                if image is None:
                    raise ImageNotFound(f"No image '{ref}' in this project")
                if alias is not None:
                    holder = await repo.by_alias(project_id, alias)
                    if holder is not None and holder.id != image.id:
                        raise AliasConflict(
                            f"Alias '{alias}' is already used by image {holder.id}; remove it "
                            "there first (PUT /api/v1/images/{id}/alias with null)"
                        )
                image.alias = alias
                image.updated_at = utcnow()
                await session.flush()
                return image
        except IntegrityError:  # a concurrent request took the alias first
            raise AliasConflict(f"Alias '{alias}' is already used by another image") from None

    async def delete(self, project_id: str, ref: str) -> str:
        """Hard delete: the row, the stored object, and every reference to it."""
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            image = await resolve_image(repo, project_id, ref)
            if image is None:
                raise ImageNotFound(f"No image '{ref}' in this project")
            image_id, key = image.id, image.storage_key
            await repo.forget_everywhere(project_id, image_id)
            await repo.delete(image)
        try:
            await self.rt.store.delete(key)
        except Exception:  # the row is gone; an orphaned object is harmless and logged
            import logging

            logging.getLogger(__name__).exception("image.delete_object_failed key=%s", key)
        return image_id


def check_alias_value(value: str, field: str) -> None:
    try:
        check_alias(value, field)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None


async def ensure_flow(
    repo: ImageRepository, project_id: str, flow_id: str, *, fresh: bool = False
) -> Flow:
    """Flows exist as soon as something names them; another project's flow id is refused.
    `fresh`: the id was just made (a create's new flow), so there is nothing to look up."""
    flow = None if fresh else await repo.flow_any(flow_id)
    if flow is not None and flow.project_id != project_id:
        raise ValidationFailed(f"flowId '{flow_id}' does not belong to this project")
    if flow is None:
        flow = Flow(id=flow_id, project_id=project_id, aliases={}, meta={})
        repo.session.add(flow)
        await repo.session.flush()
    return flow
