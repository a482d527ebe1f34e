"""Turn a request's init image reference into an object-store key the worker can read.

Accepted: an upload reference (`s3://<owner>/<imageId>.<ext>`, what the upload routes return),
an image id of this project, or a public http(s) URL (fetched with size, time and address
checks, then kept as an uploaded image)."""

from __future__ import annotations

import hashlib
import re

from imagesmith.auth.service import Principal
from imagesmith.errors import ImagesmithError, NotFound
from imagesmith.generation.schemas import GenerationRequest
from imagesmith.image.fetch import UnsafeUrl, fetch_image_bytes, resolver_for
from imagesmith.image.names import UUID_RE
from imagesmith.image.repository import ImageRepository
from imagesmith.image.service import ImageService
from imagesmith.models import Image
from imagesmith.runtime import Runtime

UPLOAD_REF = re.compile(r"^s3://([0-9a-f]{32})/([0-9a-f-]{36})\.(png|jpg|webp)\Z")
URL_IMAGE_MAX_BYTES = 5 * 1024 * 1024


class InitImageNotOwned(ImagesmithError):
    status_code = 401
    code = "INIT_IMAGE_NOT_OWNED"


def upload_owner(project_id: str) -> str:
    return hashlib.sha256(project_id.encode()).hexdigest()[:32]


def upload_ref(project_id: str, image: Image) -> str:
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[image.mime_type]
    return f"s3://{upload_owner(project_id)}/{image.id}.{extension}"


class InitImages:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    async def resolve(self, principal: Principal, request: GenerationRequest) -> str:
        project_id = principal.require_project()
        ref = (request.init_image or "").strip()
        field = request.field_names.get("init_image", "init_image")
        if ref.startswith("s3://"):
            match = UPLOAD_REF.match(ref)
            if match is None:
                raise NotFound(
                    f"{field} '{ref}' is not an upload reference of this server",
                    code="INIT_IMAGE_NOT_FOUND",
                )
            if match.group(1) != upload_owner(project_id):
                raise InitImageNotOwned(f"{field} '{ref}' belongs to another project")
            return await self._by_id(project_id, match.group(2), field, ref)
        if UUID_RE.match(ref):
            return await self._by_id(project_id, ref.lower(), field, ref)
        if ref.startswith(("http://", "https://")):
            return await self._fetch(principal, ref, field)
        raise UnsafeUrl(
            f"{field} must be an upload reference (s3://…), an image id or an http(s) URL"
        )

    async def _by_id(self, project_id: str, image_id: str, field: str, ref: str) -> str:
        async with self.rt.db.transaction() as session:
            image = await ImageRepository(session).get(project_id, image_id)
        if image is None:
            raise NotFound(
                f"{field} '{ref}' not found in this project", code="INIT_IMAGE_NOT_FOUND"
            )
        return image.storage_key

    async def _fetch(self, principal: Principal, url: str, field: str) -> str:
        settings = self.rt.settings
        try:
            data = await fetch_image_bytes(
                url,
                max_bytes=URL_IMAGE_MAX_BYTES,
                timeout=settings.url_fetch_timeout_seconds,
                allow_private=settings.allow_private_urls,
                resolve=resolver_for(principal.project_id or ""),
            )
        except UnsafeUrl as exc:
            raise UnsafeUrl(f"{field}: {exc.message}") from None
        image, _info = await ImageService(self.rt).save_upload(
            principal, data, {"sourceUrl": url[:2000]}
        )
        return image.storage_key
