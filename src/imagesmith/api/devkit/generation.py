"""Generation V2: an end user uploads 1-5 example images and instructions; the job goes through
the same queue as every other generation. Status, list, visibility, delete, the public list, and
anonymous generation (project headers, no end user) when the project allows it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from limits import parse
from starlette.datastructures import UploadFile

from imagesmith.api.client_ip import client_ip
from imagesmith.api.deps import RuntimeDep
from imagesmith.api.devkit.auth import EndUserDep, ProjectDep
from imagesmith.api.dialect import PayloadTooLarge, error_responses
from imagesmith.api.links import ImageLinks, image_links, iso
from imagesmith.api.uploads import limited_form, multipart_body
from imagesmith.auth.service import Principal
from imagesmith.errors import Forbidden, GenerationNotFound, ValidationFailed
from imagesmith.generation.schemas import (
    GenerationRequest,
    GenerationView,
    ListFilter,
    parse_json,
)
from imagesmith.generation.service import GenerationService
from imagesmith.limits.rate import ip_bucket
from imagesmith.models import GenerationStatus

router = APIRouter(prefix="/api/v1/generation", tags=["devkit4ai"])
ERRORS = error_responses(401, 403, 404, 413, 422, 429)
MAX_FILES = 5
FILE_MAX_BYTES = 10 * 1024 * 1024
TOTAL_MAX_BYTES = 50 * 1024 * 1024
INSTRUCTIONS_MAX = 1000
# Instruction keys the engine understands; every other key stays on the record.
ENGINE_KEYS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "model",
    "webhook_url",
    "webhook_events",
)
STATUS = {
    GenerationStatus.PENDING: "pending",
    GenerationStatus.PROCESSING: "processing",
    GenerationStatus.SUCCESS: "completed",
    GenerationStatus.FAILED: "failed",
    GenerationStatus.CANCELLED: "failed",
}
SUBMITTED = "Generation request submitted successfully"
UPLOAD_BODY = multipart_body(
    "files",
    many=True,
    required=("instructions",),
    instructions={"type": "string", "description": 'JSON such as {"prompt": "..."}, or text'},
)


def parse_instructions(text: str) -> tuple[dict[str, Any], str]:
    """(the instruction keys, the prompt). JSON with a `prompt`, or plain text as the prompt
    (the starter kit sends text); text that starts with `{` or `[` is meant as JSON, so it must
    be a valid JSON object."""
    if not 1 <= len(text) <= INSTRUCTIONS_MAX:
        raise ValidationFailed(
            f"instructions must be 1 to {INSTRUCTIONS_MAX} characters (got {len(text)})"
        )
    if not text.strip():
        raise ValidationFailed("instructions must contain a prompt (got only whitespace)")
    if not text.lstrip().startswith(("{", "[")):
        return {"prompt": text.strip()}, text.strip()
    try:
        keys = parse_json(text)
    except ValueError as exc:
        raise ValidationFailed(f"instructions is not valid JSON: {exc}") from None
    if not isinstance(keys, dict):
        raise ValidationFailed("instructions must be a JSON object")
    prompt = keys.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationFailed("instructions must contain a non-empty 'prompt'")
    return keys, prompt.strip()


def engine_request(keys: dict[str, Any], prompt: str, instructions: str) -> GenerationRequest:
    def number(name: str, kind: type) -> Any:
        value = keys.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed(f"instructions.{name} must be a number (got {value!r})")
        if kind is int and (not float(value).is_integer() or abs(value) > 2**62):
            raise ValidationFailed(f"instructions.{name} must be a whole number (got {value!r})")
        return kind(value)

    extra = {k: v for k, v in keys.items() if k not in ENGINE_KEYS and k != "aspect_ratio"}
    webhook_url = keys.get("webhook_url")
    if webhook_url is not None and not isinstance(webhook_url, str):
        raise ValidationFailed("instructions.webhook_url must be a URL string")
    webhook_events = keys.get("webhook_events")
    if webhook_events is not None and (
        not isinstance(webhook_events, list)
        or len(webhook_events) > 10
        or not all(isinstance(event, str) for event in webhook_events)
    ):
        raise ValidationFailed("instructions.webhook_events must be a list of event names")
    model = keys.get("model")
    ratio = keys.get("aspect_ratio")
    negative = keys.get("negative_prompt")
    return GenerationRequest(
        prompt=prompt[:2000],
        aspect_ratio=str(ratio) if ratio is not None else "1:1",
        auto_enhance=False,
        negative_prompt=str(negative)[:2000] if negative is not None else None,
        model_id=str(model) if model is not None else None,
        steps=number("steps", int),
        guidance_scale=number("guidance_scale", float),
        seed=number("seed", int),
        flow_id=None,
        meta={"instructions": extra} if extra else {},
        dialect="devkit4ai",
        instructions=instructions,
        webhook_url=webhook_url,
        webhook_events=webhook_events,
        field_names={
            k: f"instructions.{k}"
            for k in ("steps", "guidance_scale", "model", "webhook_url", "webhook_events")
        }
        | {"aspect_ratio": "instructions.aspect_ratio"},
    )


async def read_examples(request: Request) -> tuple[list[bytes], str]:
    """The example images (`files`, also `example_images`) and the instructions text."""
    form = await limited_form(request, TOTAL_MAX_BYTES, max_files=MAX_FILES + 1, max_fields=10)
    uploads = [
        value
        for name in ("files", "example_images")
        for value in form.getlist(name)
        if isinstance(value, UploadFile)
    ]
    if not uploads:
        raise ValidationFailed("At least one example image is required (multipart field 'files')")
    if len(uploads) > MAX_FILES:
        raise ValidationFailed(f"At most {MAX_FILES} example images (got {len(uploads)})")
    files = []
    for upload in uploads:
        data = await upload.read(FILE_MAX_BYTES + 1)
        if len(data) > FILE_MAX_BYTES:
            raise PayloadTooLarge(
                f"Example image '{upload.filename}' is over the {FILE_MAX_BYTES}-byte limit"
            )
        files.append(data)
    instructions = form.get("instructions")
    if not isinstance(instructions, str):
        raise ValidationFailed("instructions (a JSON string with a 'prompt') is required")
    return files, instructions


def render(view: GenerationView, links: ImageLinks) -> dict[str, Any]:
    g = view.generation
    image_url = links.url(view.image, view.org_slug, view.project_slug) if view.image else None
    examples = [links.url(i, view.org_slug, view.project_slug) for i in view.references]
    return {
        "id": g.id,
        "user_id": g.end_user_id,
        "instructions": g.instructions if g.instructions is not None else g.original_prompt,
        "status": STATUS[g.status],
        "generated_image_url": image_url,
        "result_image_url": image_url,
        "is_public": g.is_public,
        "example_images": examples,
        "error": g.error_message
        or ("cancelled" if g.status is GenerationStatus.CANCELLED else None),
        "created_at": iso(g.created_at),
        "updated_at": iso(g.updated_at),
        "completed_at": iso(g.completed_at),
    }


async def submit(request: Request, runtime: RuntimeDep, principal: Principal) -> dict[str, Any]:
    files, text = await read_examples(request)
    keys, prompt = parse_instructions(text)
    generation_request = engine_request(keys, prompt, text)
    view, _created = await GenerationService(runtime).create_with_images(
        principal, generation_request, files, {"via": "devkit4ai", "example": True}
    )
    return {"id": view.generation.id, "status": "pending", "message": SUBMITTED}


@router.post("/generate-v2", responses=ERRORS, openapi_extra=UPLOAD_BODY)
async def generate_v2(request: Request, runtime: RuntimeDep, user: EndUserDep) -> dict[str, Any]:
    """Queue a generation from 1-5 example images and instructions (an end user's)."""
    return await submit(request, runtime, user)


@router.get("/generations-v2/{generation_id}/status", responses=ERRORS)
async def status(
    request: Request, runtime: RuntimeDep, user: EndUserDep, generation_id: str
) -> dict[str, Any]:
    """One of the end user's generations: status, image URL, example images."""
    view = await GenerationService(runtime).get_owned(user, generation_id)
    return render(view, image_links(request, runtime))


Page = Annotated[int, Query(ge=1, le=1_000_000)]
PerPage = Annotated[int, Query(ge=1, le=100)]


async def page_of(
    request: Request, runtime: RuntimeDep, project_id: str, filters: ListFilter, page: int
) -> dict[str, Any]:
    views, total = await GenerationService(runtime).page(project_id, filters)
    links = image_links(request, runtime)
    return {
        "generations": [render(v, links) for v in views],
        "total": total,
        "page": page,
        "per_page": filters.limit,
    }


@router.get("/generations-v2", responses=ERRORS)
async def list_generations(
    request: Request, runtime: RuntimeDep, user: EndUserDep, page: Page = 1, per_page: PerPage = 20
) -> dict[str, Any]:
    """The end user's generations, newest first."""
    filters = ListFilter(limit=per_page, offset=(page - 1) * per_page, end_user_id=user.end_user_id)
    return await page_of(request, runtime, user.project_id or "", filters, page)


@router.patch("/generations-v2/{generation_id}/public", responses=ERRORS)
async def set_public(
    runtime: RuntimeDep,
    user: EndUserDep,
    generation_id: str,
    is_public: Annotated[bool, Form()],
) -> dict[str, Any]:
    """Show a generation in the project's public list, or take it out."""
    view = await GenerationService(runtime).set_public(user, generation_id, is_public)
    return {
        "id": view.generation.id,
        "is_public": view.generation.is_public,
        "message": "Generation visibility updated",
    }


@router.delete("/generations-v2/{generation_id}", responses=ERRORS)
async def delete_generation(
    runtime: RuntimeDep, user: EndUserDep, generation_id: str
) -> dict[str, str]:
    """Delete one of the end user's generations and its image."""
    service = GenerationService(runtime)
    await service.get_owned(user, generation_id)
    await service.delete(user.project_id or "", generation_id)
    return {"message": "Generation deleted successfully"}


@router.get("/public-generations-v2", responses=ERRORS)
async def public_generations(
    request: Request,
    runtime: RuntimeDep,
    project: ProjectDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """The project's public generations (project headers, no end user)."""
    filters = ListFilter(limit=per_page, offset=(page - 1) * per_page, public_only=True)
    return await page_of(request, runtime, project.project_id or "", filters, page)


async def anonymous_allowed(request: Request, runtime: RuntimeDep, project: Principal) -> None:
    allowance = await GenerationService(runtime).anonymous_allowance(project.project_id or "")
    if allowance is None:
        raise Forbidden(
            "Anonymous generation is off for this project; an operator turns it on with "
            "`imagesmith anonymous enable`",
            code="ANONYMOUS_DISABLED",
        )
    ip = ip_bucket(client_ip(request, runtime.settings.trusted_proxies))
    await runtime.rate_limiter.hit_item(
        parse(f"{allowance}/day"), "anonymous", project.project_id or "", ip, what=f"{ip}"
    )


@router.post("/generate-anonymous-v2", responses=ERRORS, openapi_extra=UPLOAD_BODY)
async def generate_anonymous(
    request: Request, runtime: RuntimeDep, project: ProjectDep
) -> dict[str, Any]:
    """Queue a generation with project headers only, when the project allows it (per-IP
    daily limit)."""
    await anonymous_allowed(request, runtime, project)
    return await submit(request, runtime, project)


@router.get("/anonymous-generations-v2/{generation_id}/status", responses=ERRORS)
async def anonymous_status(
    request: Request, runtime: RuntimeDep, project: ProjectDep, generation_id: str
) -> dict[str, Any]:
    """An anonymous generation's status (a generation some end user made is not shown)."""
    view = await GenerationService(runtime).get_owned(project, generation_id)
    if view.generation.end_user_id is not None or view.generation.dialect != "devkit4ai":
        raise GenerationNotFound(generation_id)
    return render(view, image_links(request, runtime))
