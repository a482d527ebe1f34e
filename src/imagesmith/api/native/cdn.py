"""Public image routes for `<img src>`:

* `/cdn/{org}/{project}/img/{id | @alias}`: stored bytes with an ETag;
* `/cdn/{org}/{project}/live/{scope}?prompt=…`: generated on the first request, cached after."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from imagesmith.api.client_ip import client_ip
from imagesmith.api.deps import CLIENT_CLOSED_REQUEST, LEFT, RuntimeDep, hung_up
from imagesmith.api.dialect import error_responses
from imagesmith.api.native.errors import native_error
from imagesmith.auth.service import KeyService
from imagesmith.errors import ImageNotFound, ImagesmithError, ValidationFailed
from imagesmith.generation.aspect import ASPECT_RATIOS
from imagesmith.generation.enhance import DEFAULT_TEMPLATE, TEMPLATES
from imagesmith.generation.schemas import MAX_PROMPT
from imagesmith.image.service import ImageService
from imagesmith.live.service import LiveRequest, LiveService, live_principal
from imagesmith.models import GenerationStatus, Image, Organization, Project
from imagesmith.runtime import Runtime

router = APIRouter(tags=["cdn"])
# URLs whose content can change in place (regenerate): caches keep a copy but revalidate it
# with the ETag every time, which costs a 304, never a stale image.
CACHE_POLICY = "public, no-cache"
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    **error_responses(404),
}


class GenerationFailed(ImagesmithError):
    status_code = 500
    code = "GENERATION_FAILED"


async def find_project(runtime: Runtime, org: str, project: str) -> tuple[Organization, Project]:
    async with runtime.db.read() as session:
        return await KeyService(session).project(org, project)


async def image_response(
    runtime: Runtime, image: Image, if_none_match: str | None, headers: dict[str, str]
) -> Response:
    etag = f'"{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_POLICY, "X-Image-Id": image.id, **headers}
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    stored = await runtime.store.get(image.storage_key)
    if stored is None:
        raise ImageNotFound(f"Image '{image.id}' has no stored file (it may have been deleted)")
    return Response(content=stored.data, media_type=image.mime_type, headers=headers)


@router.get("/cdn/{org}/{project}/img/{ref}", responses=IMAGE_RESPONSES)
async def cdn_image(
    runtime: RuntimeDep,
    org: str,
    project: str,
    ref: str,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """An image by id or project alias (computed aliases such as @last need an API key)."""
    _org, found = await find_project(runtime, org, project)
    image = await ImageService(runtime).get_public(found.id, ref)
    return await image_response(runtime, image, if_none_match, {})


@router.head("/cdn/{org}/{project}/img/{ref}", include_in_schema=False)
async def cdn_image_head(
    runtime: RuntimeDep,
    org: str,
    project: str,
    ref: str,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """HEAD of an image: the same headers, no body."""
    return await cdn_image(runtime, org, project, ref, if_none_match)


@router.get(
    "/cdn/{org}/{project}/live/{scope}",
    responses={
        **IMAGE_RESPONSES,
        **error_responses(400, 403, 429, 500),
        504: {"description": "Still generating: retry (see Retry-After)"},
    },
)
async def cdn_live(
    request: Request,
    runtime: RuntimeDep,
    org: str,
    project: str,
    scope: str,
    prompt: Annotated[str, Query(min_length=1, max_length=MAX_PROMPT)],
    aspect_ratio: Annotated[str, Query(alias="aspectRatio")] = "1:1",
    auto_enhance: Annotated[bool, Query(alias="autoEnhance")] = True,
    template: Annotated[str, Query()] = DEFAULT_TEMPLATE,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Image bytes for a prompt: the first request generates it (through the queue, waiting),
    later identical requests are served from the cache (X-Cache-Status: MISS | HIT)."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValidationFailed(
            f"aspectRatio '{aspect_ratio}' is not one of: {', '.join(ASPECT_RATIOS)}"
        )
    if template not in TEMPLATES:
        raise ValidationFailed(f"template '{template}' is not one of: {', '.join(TEMPLATES)}")
    if not prompt.strip():
        raise ValidationFailed("prompt must not be empty")
    organization, found = await find_project(runtime, org, project)
    principal = live_principal(organization.id, organization.slug, found.id, found.slug)
    result = await LiveService(runtime).serve(
        principal,
        scope,
        LiveRequest(prompt.strip(), aspect_ratio, auto_enhance, template),
        client_ip(request, runtime.settings.trusted_proxies),
        gone=lambda: hung_up(request),
    )
    if result.view.client_left:  # the job runs on for the URL's next request; counted as 499
        return native_error(CLIENT_CLOSED_REQUEST, "CLIENT_CLOSED_REQUEST", LEFT)
    generation = result.view.generation
    headers = {"X-Cache-Status": result.cache_status, "X-Generation-Id": generation.id}
    if result.cache_status == "HIT":
        headers["X-Cache-Hits"] = str(result.hit_count)
    if generation.status is GenerationStatus.SUCCESS and result.view.image is not None:
        return await image_response(runtime, result.view.image, if_none_match, headers)
    if generation.status.is_terminal:
        raise GenerationFailed(generation.error_message or "Generation failed", headers=headers)
    raise ImagesmithError(
        f"Generation {generation.id} is still running; retry this URL",
        code="GENERATION_PENDING",
        status_code=504,
        headers={**headers, "Retry-After": "5"},
    )
