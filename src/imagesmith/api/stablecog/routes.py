"""Stablecog's token API over the core: create (waits for the images), models, defaults,
outputs, upload, credits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from imagesmith.api.deps import (
    BEARER_KEY,
    CLIENT_CLOSED_REQUEST,
    LEFT,
    RuntimeDep,
    hung_up,
    principal_from,
)
from imagesmith.api.dialect import error_responses
from imagesmith.api.links import ImageLinks, image_links, iso
from imagesmith.api.stablecog.errors import stablecog_response
from imagesmith.api.uploads import limited_form, multipart_body, read_file
from imagesmith.auth.service import Principal
from imagesmith.catalog.models import ModelRegistry, ModelSpec
from imagesmith.catalog.params import COUNT_BOUND, MAX_OUTPUTS, MAX_SEED, SIDE_BOUND
from imagesmith.catalog.schedulers import SCHEDULER_IDS, SCHEDULER_NAMES
from imagesmith.errors import ValidationFailed
from imagesmith.generation.init_image import upload_ref
from imagesmith.generation.schemas import (
    MAX_PROMPT,
    GenerationRequest,
    GenerationView,
    OutputFilter,
)
from imagesmith.generation.service import GenerationService, OnTimeout
from imagesmith.image.service import ImageService
from imagesmith.models import Generation, GenerationStatus, Image

router = APIRouter(prefix="/v1", tags=["stablecog"])

SC_NAMES = {
    "steps": "inference_steps",
    "scheduler": "scheduler_id",
    "model": "model_id",
    "init_image": "init_image_url",
    "num_outputs": "num_outputs",
    "guidance_scale": "guidance_scale",
    "prompt_strength": "prompt_strength",
    "width": "width",
    "height": "height",
    "webhook_url": "webhook_url",
    "webhook_events": "webhook_events",
}
UPLOAD_MAX_BYTES = 10 * 1024 * 1024
ERRORS = error_responses(400, 401, 413, 429, 500)
MODEL_NAMESPACE = uuid.UUID("8f2d6c1e-3c5b-4d7a-9a43-6f1d2e0b9c55")

BearerDep = Annotated[Principal, Depends(principal_from(BEARER_KEY, project_only=True))]


def model_uuid(spec: ModelSpec) -> str:
    """Stablecog names models by UUID: a stable one derived from our model id."""
    return str(uuid.uuid5(MODEL_NAMESPACE, spec.id))


def model_id_of(registry: ModelRegistry, value: str | None) -> str | None:
    """Accept our model id or its Stablecog UUID."""
    for spec in registry.all():
        if value == model_uuid(spec):
            return spec.id
    return value


class StablecogCreate(BaseModel):
    """Body of POST /v1/image/generation/create (unknown fields are ignored, as Stablecog does)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT)
    model_id: str | None = None
    scheduler_id: str | None = None
    width: int | None = Field(None, ge=1, le=SIDE_BOUND)
    height: int | None = Field(None, ge=1, le=SIDE_BOUND)
    num_outputs: int | None = Field(None, ge=1, le=COUNT_BOUND)
    guidance_scale: float | None = Field(None, allow_inf_nan=False)
    inference_steps: int | None = Field(None, ge=1, le=COUNT_BOUND)
    seed: int | None = Field(
        None, ge=-MAX_SEED, le=MAX_SEED, description="Random when absent or negative"
    )
    init_image_url: str | None = None
    # The OpenAPI document spells it `prompt_strengtht`; accept both.
    prompt_strength: float | None = Field(
        None, validation_alias=AliasChoices("prompt_strength", "prompt_strengtht")
    )
    # Ours (Stablecog has none): this generation's events, signed (Standard Webhooks).
    webhook_url: str | None = Field(None, max_length=2048)
    webhook_events: list[str] | None = Field(None, max_length=10)

    def to_request(self, registry: ModelRegistry) -> GenerationRequest:
        if not self.prompt.strip():
            raise ValidationFailed("prompt must not be empty")
        seed = self.seed if self.seed is not None and self.seed >= 0 else None
        return GenerationRequest(
            prompt=self.prompt.strip(),
            aspect_ratio=None,
            width=self.width,
            height=self.height,
            auto_enhance=False,
            negative_prompt=self.negative_prompt,
            model_id=model_id_of(registry, self.model_id),
            steps=self.inference_steps,
            guidance_scale=self.guidance_scale,
            scheduler=self.scheduler_id,
            seed=seed,
            num_outputs=self.num_outputs if self.num_outputs is not None else 1,
            init_image=self.init_image_url,
            prompt_strength=self.prompt_strength,
            flow_id=None,
            dialect="stablecog",
            field_names=SC_NAMES,
            webhook_url=self.webhook_url,
            webhook_events=self.webhook_events,
        )


def settings_of(g: Generation) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "model_id": g.model_id,
        "scheduler_id": g.scheduler,
        "width": g.width,
        "height": g.height,
        "inference_steps": g.steps,
        "guidance_scale": g.guidance_scale,
        "seed": g.seed,
        "num_outputs": g.num_outputs,
    }
    if g.negative_prompt:
        settings["negative_prompt"] = g.negative_prompt
    if g.init_image_ref:
        settings["init_image_url"] = g.init_image_ref
        settings["prompt_strength"] = g.prompt_strength
    return settings


def outputs_of(view: GenerationView, links: ImageLinks) -> list[dict[str, str]]:
    out = []
    for image in view.images:
        url = links.url(image, view.org_slug, view.project_slug)
        out.append({"id": image.id, "url": url, "image_url": url})
    return out


@router.post("/image/generation/create", responses=ERRORS)
async def create_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: BearerDep,
    body: Annotated[StablecogCreate, Body()],
) -> JSONResponse:
    """Generate images and wait for them (up to IMAGESMITH_STABLECOG_WAIT_SECONDS, 240 s)."""
    wait = runtime.settings.stablecog_wait_seconds
    # A client that hangs up ends the wait; its job runs on (its outputs are listed later),
    # where one that outlives the wait is cancelled and refunded, as Stablecog does.
    view, _created = await GenerationService(runtime).create_and_wait(
        principal,
        body.to_request(runtime.registry),
        wait,
        OnTimeout.CANCEL,
        gone=lambda: hung_up(request),
        on_gone=OnTimeout.RETURN,
    )
    g = view.generation
    if view.client_left:  # the job runs on; counted as 499, not as a failure
        return stablecog_response(CLIENT_CLOSED_REQUEST, "client_closed_request", LEFT)
    if g.status is GenerationStatus.SUCCESS:
        return JSONResponse(
            {
                "outputs": outputs_of(view, image_links(request, runtime)),
                "remaining_credits": view.remaining_credits,
                "settings": settings_of(g),
            }
        )
    if view.timed_out:
        # Stablecog's rule: a request that outlives its wait fails and its credits come back.
        return stablecog_response(
            500,
            "TIMEOUT",
            f"Generation {g.id} did not finish in {wait:g} s; it was cancelled and refunded",
            settings=settings_of(g),
        )
    return stablecog_response(
        500, g.error_message or "Generation failed", None, settings=settings_of(g)
    )


def model_entry(spec: ModelSpec, default_id: str) -> dict[str, Any]:
    return {
        "id": spec.id,
        "uuid": model_uuid(spec),
        "name": spec.id,
        "description": spec.description,
        "is_default": spec.id == default_id,
        "active": True,
        "available_schedulers": [{"id": s, "name": SCHEDULER_NAMES[s]} for s in spec.schedulers],
        "default_scheduler_id": spec.default_scheduler,
        "default_width": spec.default_width,
        "default_height": spec.default_height,
        "default_inference_steps": spec.default_steps,
        "limits": {
            "width": [spec.min_side, spec.max_side],
            "height": [spec.min_side, spec.max_side],
            "inference_steps": [spec.min_steps, spec.max_steps],
            "guidance_scale": [spec.min_guidance, spec.max_guidance],
            "num_outputs": [1, MAX_OUTPUTS],
        },
    }


@router.get("/image/generation/models", responses=ERRORS)
async def list_models(runtime: RuntimeDep, _principal: BearerDep) -> dict[str, Any]:
    """The models this server can run, with their schedulers and default sizes."""
    default = runtime.settings.default_model
    return {"models": [model_entry(spec, default) for spec in runtime.registry.all()]}


@router.get("/image/generation/defaults", responses=ERRORS)
async def defaults(runtime: RuntimeDep, _principal: BearerDep) -> dict[str, Any]:
    """What a request with only a prompt gets."""
    spec = runtime.registry.get(runtime.settings.default_model)
    return {
        "model_id": spec.id,
        "scheduler_id": spec.default_scheduler,
        "width": spec.default_width,
        "height": spec.default_height,
        "num_outputs": 1,
        "guidance_scale": spec.default_guidance,
        "inference_steps": spec.default_steps,
        "prompt_strength": 0.5,
    }


def csv(value: str | None, cast: type = str) -> list[Any] | None:
    if not value:
        return None
    try:
        values = [cast(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValidationFailed(f"'{value}' is not a comma-separated list of numbers") from None
    if any(isinstance(v, int | float) and abs(v) > 2**31 - 1 for v in values):
        raise ValidationFailed(f"'{value}' holds a number out of range")
    return values


@router.get("/image/generation/outputs", responses=ERRORS)
async def list_outputs(
    request: Request,
    runtime: RuntimeDep,
    principal: BearerDep,
    cursor: Annotated[str | None, Query(description="`next` from the previous page")] = None,
    per_page: Annotated[int, Query(ge=1, le=100)] = 50,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    model_ids: Annotated[str | None, Query(description="Comma-separated")] = None,
    scheduler_ids: Annotated[str | None, Query(description="Comma-separated")] = None,
    widths: Annotated[str | None, Query()] = None,
    heights: Annotated[str | None, Query()] = None,
    inference_steps: Annotated[str | None, Query()] = None,
    guidance_scales: Annotated[str | None, Query()] = None,
    start_dt: Annotated[datetime | None, Query()] = None,
    end_dt: Annotated[datetime | None, Query()] = None,
) -> dict[str, Any]:
    """This project's generated images, newest first, with cursor pagination."""
    for name, value in (("scheduler_ids", scheduler_ids),):
        unknown = set(csv(value) or []) - set(SCHEDULER_IDS)
        if unknown:
            raise ValidationFailed(f"{name}: unknown scheduler ids {sorted(unknown)}")
    filters = OutputFilter(
        model_ids=csv(model_ids),
        scheduler_ids=csv(scheduler_ids),
        widths=csv(widths, int),
        heights=csv(heights, int),
        steps=csv(inference_steps, int),
        guidance_scales=csv(guidance_scales, float),
        start=start_dt,
        end=end_dt,
        ascending=order == "asc",
    )
    page = await GenerationService(runtime).outputs_page(
        principal.require_project(), filters, cursor, per_page
    )
    links = image_links(request, runtime)
    return {
        "total": page.total,
        "next": page.next_cursor,
        "outputs": [
            output_entry(image, g, links, page.org_slug, page.project_slug)
            for image, g in page.rows
        ],
    }


def output_entry(
    image: Image, g: Generation, links: ImageLinks, org_slug: str, project_slug: str
) -> dict[str, Any]:
    return {
        "id": image.id,
        "image_url": links.url(image, org_slug, project_slug),
        "upscaled_image_url": None,
        "gallery_status": "not_submitted",
        "is_favorited": False,
        "was_auto_submitted": False,
        "created_at": iso(image.created_at),
        "generation": {
            "id": g.id,
            "prompt": {"text": g.original_prompt},
            "negative_prompt": {"text": g.negative_prompt} if g.negative_prompt else None,
            "status": "succeeded",
            "created_at": iso(g.created_at),
            **settings_of(g),
        },
    }


@router.post(
    "/image/upload",
    responses=ERRORS,
    openapi_extra=multipart_body(),
)
async def upload_image(request: Request, runtime: RuntimeDep, principal: BearerDep) -> JSONResponse:
    """Upload a JPEG, PNG or WebP (≤ 10 MB) to use as `init_image_url` (needs credits left)."""
    form = await limited_form(request, UPLOAD_MAX_BYTES, max_files=1)
    data = await read_file(form, "file", UPLOAD_MAX_BYTES)
    image, _info = await ImageService(runtime).save_upload(
        principal, data, {"via": "stablecog"}, require_credit=True
    )
    return JSONResponse({"object": upload_ref(image.project_id, image)})


@router.get("/credits", responses=ERRORS)
async def credits(runtime: RuntimeDep, principal: BearerDep) -> dict[str, Any]:
    """The project's credit balance (`null` when unlimited)."""
    project_id = principal.require_project()
    balance = await GenerationService(runtime).balance(project_id)
    return {
        "total_remaining_credits": balance,
        "unlimited": balance is None,
        "credits": [
            {
                "id": project_id,
                "remaining_amount": balance,
                "expires_at": None,
                "type": {
                    "id": "project",
                    "name": "Project balance",
                    "amount": balance,
                    "description": "One credit per output image; refunded when a job fails",
                },
            }
        ],
    }
