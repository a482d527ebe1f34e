"""`/cdn/{org}/{project}/img/{id | @alias}`: image bytes for <img src>, with ETag revalidation."""

from __future__ import annotations

from fastapi import APIRouter, Header, Response
from sqlalchemy import select

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.errors import error_responses
from imagesmith.errors import ImageNotFound
from imagesmith.models import Image, Organization, Project

router = APIRouter(tags=["cdn"])
# Capability URLs that may change content in place (regenerate): caches keep a copy but must
# revalidate it with the ETag each time, which costs a 304, never a stale image.
CACHE_POLICY = "public, no-cache"


async def find_image(runtime: RuntimeDep, org: str, project: str, ref: str) -> Image:
    async with runtime.db.transaction() as session:
        query = (
            select(Image)
            .join(Project, Project.id == Image.project_id)
            .join(Organization, Organization.id == Project.organization_id)
            .where(Organization.slug == org, Project.slug == project, Image.deleted_at.is_(None))
        )
        query = (
            query.where(Image.alias == ref) if ref.startswith("@") else query.where(Image.id == ref)
        )
        image = (await session.execute(query)).scalar_one_or_none()
    if image is None:
        raise ImageNotFound(f"No image '{ref}' in {org}/{project}")
    return image


@router.api_route(
    "/cdn/{org}/{project}/img/{ref}",
    methods=["GET", "HEAD"],
    responses={200: {"content": {"image/png": {}}}, **error_responses(404)},
)
async def cdn_image(
    runtime: RuntimeDep,
    org: str,
    project: str,
    ref: str,
    if_none_match: str | None = Header(None),
) -> Response:
    """Serve an image by id or @alias."""
    image = await find_image(runtime, org, project, ref)
    etag = f'"{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_POLICY, "X-Image-Id": image.id}
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    stored = await runtime.store.get(image.storage_key)
    if stored is None:
        raise ImageNotFound(f"Image '{ref}' has no stored file (it may have been deleted)")
    return Response(content=stored.data, media_type=image.mime_type, headers=headers)
