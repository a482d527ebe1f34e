"""`/api/v1/images`: uploads and the image library (by id or @alias)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.dialect import keyed_responses
from imagesmith.api.links import ImageLinks, image_links, iso
from imagesmith.api.native.auth import PrincipalDep
from imagesmith.api.native.render import MAX_OFFSET, paginated
from imagesmith.api.native.schemas import Meta
from imagesmith.api.uploads import limited_form, multipart_body, read_file
from imagesmith.errors import ValidationFailed
from imagesmith.generation.schemas import check_meta, parse_json
from imagesmith.image.names import NEW_FLOW, UUID_RE
from imagesmith.image.schemas import ImageFilter
from imagesmith.image.service import ImageService
from imagesmith.models import Image, ImageSource

router = APIRouter(prefix="/api/v1/images", tags=["images"])
UPLOAD_MAX_BYTES = 5 * 1024 * 1024


def render_image_record(image: Image, links: ImageLinks, org: str, project: str) -> dict[str, Any]:
    return {
        "id": image.id,
        "projectId": image.project_id,
        "flowId": image.flow_id,
        "generationId": image.generation_id,
        "storageKey": image.storage_key,
        "storageUrl": links.url(image, org, project),
        "mimeType": image.mime_type,
        "fileSize": image.file_size,
        "width": image.width,
        "height": image.height,
        "source": image.source.value,
        "alias": image.alias,
        "focalPoint": image.focal_point,
        "meta": dict(image.meta or {}),
        "sha256": image.sha256,
        "createdAt": iso(image.created_at),
        "updatedAt": iso(image.updated_at),
        "deletedAt": iso(image.deleted_at),
    }


def envelope(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, image: Image, status: int = 200
) -> JSONResponse:
    assert principal.organization_slug and principal.project_slug
    data = render_image_record(
        image, image_links(request, runtime), principal.organization_slug, principal.project_slug
    )
    return JSONResponse({"success": True, "data": data}, status_code=status)


def form_text(value: Any, field: str, limit: int = 10_000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"Multipart field '{field}' must be text, not a file")
    if len(value) > limit:
        raise ValidationFailed(f"Multipart field '{field}' is over {limit} characters")
    return value


UPLOAD_BODY = multipart_body(
    alias={"type": "string"},
    flowId={"type": "string", "description": "UUID, or 'null' for none"},
    flowAlias={"type": "string"},
    meta={"type": "string", "description": "A JSON object"},
)


@router.post(
    "/upload", status_code=201, responses=keyed_responses(400, 409, 413), openapi_extra=UPLOAD_BODY
)
async def upload_image(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    """Upload a PNG, JPEG or WebP (≤ 5 MB, checked by content) into the library."""
    form = await limited_form(request, UPLOAD_MAX_BYTES, max_files=1)
    data = await read_file(form, "file", UPLOAD_MAX_BYTES)
    meta_text = form_text(form.get("meta"), "meta")
    meta: dict[str, Any] = {}
    if meta_text:
        try:
            meta = parse_json(meta_text)
        except ValueError as exc:
            raise ValidationFailed(f"meta must be a JSON object: {exc}") from None
        if not isinstance(meta, dict):
            raise ValidationFailed("meta must be a JSON object")
        try:
            check_meta(meta)
        except ValueError as exc:
            raise ValidationFailed(str(exc)) from None
    flow_text = form_text(form.get("flowId"), "flowId")
    flow_id: str | None
    if flow_text is None:
        flow_id = NEW_FLOW
    elif flow_text in ("", "null"):
        flow_id = None
    elif UUID_RE.match(flow_text):
        flow_id = flow_text.lower()
    else:
        raise ValidationFailed(f"flowId must be a UUID or 'null', got '{flow_text[:80]}'")
    image, _ = await ImageService(runtime).save_upload(
        principal,
        data,
        meta,
        alias=form_text(form.get("alias"), "alias") or None,
        flow_id=flow_id,
        flow_alias=form_text(form.get("flowAlias"), "flowAlias") or None,
    )
    return envelope(request, runtime, principal, image, 201)


@router.get("", responses=keyed_responses(400))
async def list_images(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    flow_id: Annotated[str | None, Query(alias="flowId", max_length=64)] = None,
    source: Annotated[ImageSource | None, Query()] = None,
    alias: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> dict[str, Any]:
    """List the project's images, newest first."""
    project_id = principal.require_project()
    images, total = await ImageService(runtime).page(
        project_id, ImageFilter(flow_id, source, alias, include_deleted, limit, offset)
    )
    links = image_links(request, runtime)
    assert principal.organization_slug and principal.project_slug
    return paginated(
        [
            render_image_record(i, links, principal.organization_slug, principal.project_slug)
            for i in images
        ],
        total,
        limit,
        offset,
    )


@router.get("/{ref}", responses=keyed_responses(404))
async def get_image(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ref: str,
    flow_id: Annotated[
        str | None, Query(alias="flowId", description="Context for flow aliases")
    ] = None,
) -> JSONResponse:
    """One image by id or alias (@last, @first, @upload, flow aliases, project aliases)."""
    image = await ImageService(runtime).get(principal.require_project(), ref, flow_id)
    return envelope(request, runtime, principal, image)


class FocalPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=0, le=1)
    y: float = Field(ge=0, le=1)


class ImageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    focal_point: FocalPoint | None = Field(None, alias="focalPoint")
    meta: Meta | None = None


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str | None = Field(..., description="@name to assign, or null to remove")


@router.put("/{ref}", responses=keyed_responses(400, 404))
async def update_image(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ref: str,
    body: Annotated[ImageUpdate, Body()],
) -> JSONResponse:
    """Change focalPoint ({x, y} in 0..1, or null) and meta."""
    changes: dict[str, Any] = {}
    if "focal_point" in body.model_fields_set:
        changes["focal_point"] = body.focal_point.model_dump() if body.focal_point else None
    if body.meta is not None:
        changes["meta"] = body.meta
    image = await ImageService(runtime).update(principal.require_project(), ref, changes)
    return envelope(request, runtime, principal, image)


@router.put("/{ref}/alias", responses=keyed_responses(400, 404, 409))
async def set_alias(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ref: str,
    body: Annotated[AliasUpdate, Body()],
) -> JSONResponse:
    """Assign a project alias (409 ALIAS_CONFLICT when taken) or remove it with null."""
    image = await ImageService(runtime).set_alias(principal.require_project(), ref, body.alias)
    return envelope(request, runtime, principal, image)


@router.delete("/{ref}", responses=keyed_responses(404))
async def delete_image(runtime: RuntimeDep, principal: PrincipalDep, ref: str) -> dict[str, Any]:
    """Hard delete: the stored file, the record, and every reference to it."""
    image_id = await ImageService(runtime).delete(principal.require_project(), ref)
    return {"success": True, "data": {"id": image_id}}
