"""OpenAI's Images API over the durable queue: every call is an ordinary generation (listed in
the native API, counted by quotas and credits), waited for, and cancelled and refunded if the
client goes away first."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData, UploadFile

from imagesmith.api.b64json import Base64, Base64JSONResponse, dumps
from imagesmith.api.deps import (
    BEARER_KEY,
    CLIENT_CLOSED_REQUEST,
    LEFT,
    RuntimeDep,
    hung_up,
    principal_from,
)
from imagesmith.api.dialect import error_responses
from imagesmith.api.links import ImageLinks, image_links
from imagesmith.api.uploads import limited_form, multipart_body
from imagesmith.auth.service import Principal
from imagesmith.catalog.models import ModelSpec, UnknownModel
from imagesmith.catalog.params import COUNT_BOUND, MAX_PREVIEWS, MAX_SEED
from imagesmith.errors import Conflict, ImagesmithError, NotFound
from imagesmith.generation.aspect import nearest_size
from imagesmith.generation.parameters import ParamError
from imagesmith.generation.schemas import MAX_PROMPT, GenerationRequest, GenerationView
from imagesmith.generation.service import GenerationService, OnTimeout
from imagesmith.image.validation import header_size
from imagesmith.models import GenerationStatus
from imagesmith.runtime import Runtime
from imagesmith.storage.base import preview_key

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS = error_responses(400, 401, 403, 404, 413, 429, 500)
BearerDep = Annotated[Principal, Depends(principal_from(BEARER_KEY, project_only=True))]
MAX_N = 10
EDIT_MAX_BYTES = 25 * 1024 * 1024  # OpenAI's limit for an edit's images
SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})\Z")
# OpenAI's own model names run on the configured default (IMAGESMITH_OPENAI_DEFAULT_MODEL).
OPENAI_MODELS = re.compile(r"^(gpt-image|dall-e|chatgpt-image)")
FIELDS = {
    "width": "size (width)",
    "height": "size (height)",
    "steps": "steps",
    "num_outputs": "n",
    "model": "model",
    "prompt_strength": "strength",
    "init_image": "image",
}


class ImageGenerate(BaseModel):
    """Body of POST /v1/images/generations (OpenAI's fields; unknown ones are ignored)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    model: str | None = Field(None, max_length=128)
    n: int | None = Field(1, ge=1, le=MAX_N)
    size: str | None = Field("auto", max_length=16, description="WIDTHxHEIGHT or auto")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: str | None = Field(None, max_length=16, description="Accepted; no effect")
    style: str | None = Field(None, max_length=16, description="Accepted; no effect")
    background: str | None = Field(None, max_length=16, description="Accepted; no effect")
    moderation: str | None = Field(None, max_length=16, description="Accepted; no effect")
    user: str | None = Field(None, max_length=256, description="Kept on the record")
    stream: bool | None = None
    partial_images: int | None = Field(
        None, ge=0, le=3, description="With stream: previews decoded from the latents mid-run"
    )
    # imagesmith's extensions (OpenAI has none of these; its SDK sends them with extra_body):
    # what an imagesmith calling another imagesmith as an openai-compatible model passes on.
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Extension: the seed")
    steps: int | None = Field(None, ge=1, le=COUNT_BOUND, description="Extension: steps")
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT, description="Extension: what the image should not show"
    )


def resolve_model(runtime: Runtime, requested: str | None) -> str | None:
    if requested is None or OPENAI_MODELS.match(requested):
        return runtime.settings.openai_default_model  # None: the server's default
    return requested


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size in (None, "auto"):
        return None, None
    match = SIZE_RE.match(size)
    if match is None:
        raise ParamError("size", f"size must be 'WIDTHxHEIGHT' or 'auto' (got '{size[:20]}')")
    return int(match.group(1)), int(match.group(2))


def wants_b64(requested_model: str | None, response_format: str | None) -> bool:
    """GPT image models always answer base64 in OpenAI's API; others default to URLs."""
    if response_format is not None:
        return response_format == "b64_json"
    return bool(requested_model and requested_model.startswith(("gpt-image", "chatgpt-image")))


def core_request(
    runtime: Runtime,
    prompt: str,
    model: str | None,
    n: int | None,
    size: str | None,
    user: str | None,
    for_images: bool = False,
) -> GenerationRequest:
    if not prompt.strip() and not for_images:
        raise ParamError("prompt", "prompt must not be empty")
    width, height = parse_size(size)
    return GenerationRequest(
        prompt=prompt.strip() or "a variation",
        aspect_ratio=None,
        width=width,
        height=height,
        auto_enhance=False,
        model_id=resolve_model(runtime, model),
        num_outputs=n or 1,
        max_outputs=MAX_N,
        flow_id=None,
        meta={"openaiUser": user} if user else {},
        dialect="openai",
        field_names=FIELDS,
    )


async def encoded(
    runtime: Runtime, view: GenerationView, output_format: str | None, compression: int | None
) -> list[bytes]:
    """The output images as bytes, transcoded when another format than PNG was asked for."""
    out = []
    for image in view.images:
        stored = await runtime.store.get(image.storage_key)
        if stored is None:
            raise ImagesmithError("An output image is missing from storage", status_code=500)
        out.append(await transcoded(stored.data, output_format, compression))
    return out


async def transcoded(png: bytes, output_format: str | None, compression: int | None) -> bytes:
    if output_format in (None, "png"):
        return png  # as stored: no trip to a thread
    # Re-encoding is CPU work: off the event loop.
    return await asyncio.to_thread(transcode, png, output_format, compression)


def transcode(png: bytes, output_format: str | None, compression: int | None) -> bytes:
    """The PNG as JPEG or WebP (`transcoded` answers a PNG as stored without calling this)."""
    from PIL import Image as PILImage  # loaded with the first image that needs it

    with PILImage.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        quality = 100 - (compression if compression is not None else 25)
        image.convert("RGB").save(
            buffer, format="JPEG" if output_format == "jpeg" else "WEBP", quality=max(quality, 1)
        )
        return buffer.getvalue()


@dataclass(frozen=True)
class CreatedJob:
    """A job just created: what the wait needs, and all it keeps."""

    project_id: str
    generation_id: str
    known: tuple[GenerationStatus, float] | None  # GenerationView.known()


async def created_job(made: Awaitable[tuple[GenerationView, bool]]) -> CreatedJob:
    view, _created = await made
    return CreatedJob(view.generation.project_id, view.generation.id, view.known())


async def respond(
    request: Request,
    runtime: Runtime,
    job: CreatedJob,
    b64: bool,
    output_format: str | None,
    compression: int | None,
) -> Base64JSONResponse:
    """Wait for the job `created_job` named, and answer. The wait can last minutes; callers
    keep neither the job's rows nor an edit's uploads while it runs (they are stored by now)."""
    view = await GenerationService(runtime).wait(
        job.project_id,
        job.generation_id,
        runtime.settings.openai_wait_seconds,
        OnTimeout.CANCEL,
        gone=lambda: hung_up(request),
        known=job.known,
    )
    g = view.generation
    if view.client_left:  # cancelled and refunded; counted as 499, not as a failure
        return Base64JSONResponse(
            {"error": {"message": LEFT, "type": "client_closed_request", "param": None}},
            status_code=CLIENT_CLOSED_REQUEST,
        )
    if g.status is not GenerationStatus.SUCCESS:
        if view.timed_out:
            raise ImagesmithError(
                f"The images were not ready within {runtime.settings.openai_wait_seconds:g} s; "
                "the request was cancelled and refunded",
                code="TIMEOUT",
                status_code=500,
                headers={"x-should-retry": "false"},
            )
        # The SDK retries 5xx unless told not to: a failed generation would only fail again.
        raise ImagesmithError(
            g.error_message or "Generation failed",
            status_code=500,
            headers={"x-should-retry": "false"},
        )
    data: list[dict[str, Any]] = []
    if b64:
        for image in await encoded(runtime, view, output_format, compression):
            data.append({"b64_json": Base64(image), "revised_prompt": g.prompt})
    else:
        links: ImageLinks = image_links(request, runtime)
        data = [
            {"url": links.url(image, view.org_slug, view.project_slug), "revised_prompt": g.prompt}
            for image in view.images
        ]
    return Base64JSONResponse(
        {
            "created": int(time.time()),
            "data": data,
            "output_format": output_format or "png",
            "size": f"{g.width}x{g.height}",
        }
    )


KEEPALIVE_SECONDS = 15.0
# Cancellations started for streams whose client left (kept referenced until they finish).
_cancelling: set[asyncio.Task[Any]] = set()


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def echo(value: str | None, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "auto"


@dataclass(frozen=True)
class StreamOptions:
    """How the streamed images are encoded, and the settings each event echoes back."""

    output_format: str | None
    compression: int | None
    quality: str | None
    background: str | None
    kind: Literal["image_generation", "image_edit"] = "image_generation"  # the events' prefix


def stream_response(
    runtime: Runtime, view: GenerationView, options: StreamOptions
) -> StreamingResponse:
    return StreamingResponse(
        image_events(runtime, view, options),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def image_events(
    runtime: Runtime, view: GenerationView, options: StreamOptions
) -> AsyncIterator[bytes]:
    """OpenAI's image stream over the generation: a `partial_image` event per preview the worker
    stores (fewer than asked when the run has too few steps), then one `completed` event per
    image, or an `error` event. A client that leaves first has its generation cancelled."""
    service = GenerationService(runtime)
    g = view.generation
    project_id, generation_id = g.project_id, g.id
    wait = min(runtime.settings.openai_wait_seconds, runtime.settings.max_wait_seconds)
    deadline = time.monotonic() + wait
    fmt, compression = options.output_format or "png", options.compression
    common = {
        "size": f"{g.width}x{g.height}",
        "quality": echo(options.quality, ("low", "medium", "high")),
        "background": echo(options.background, ("transparent", "opaque")),
        "output_format": fmt,
    }
    sent = 0
    last_sent = time.monotonic()
    ended = False
    try:
        with runtime.notifier.watch(generation_id, progress=True) as changes:
            while True:
                view = await service.get(project_id, generation_id)
                g = view.generation
                for index in range(sent, g.previews_ready):
                    key = preview_key(view.org_slug, view.project_slug, generation_id, index)
                    stored = await runtime.store.get(key)
                    if stored is not None:
                        image = await transcoded(stored.data, fmt, compression)
                        yield sse(
                            f"{options.kind}.partial_image",
                            {
                                "type": f"{options.kind}.partial_image",
                                "b64_json": Base64(image),
                                "created_at": int(time.time()),
                                "partial_image_index": index,
                                **common,
                            },
                        )
                        last_sent = time.monotonic()
                sent = max(sent, g.previews_ready)
                if g.status is GenerationStatus.SUCCESS:
                    ended = True
                    for image in await encoded(runtime, view, fmt, compression):
                        yield sse(
                            f"{options.kind}.completed",
                            {
                                "type": f"{options.kind}.completed",
                                "b64_json": Base64(image),
                                "created_at": int(time.time()),
                                "usage": NO_TOKENS,
                                **common,
                            },
                        )
                    return
                if g.status.is_terminal:
                    ended = True
                    yield stream_error(g.error_message or f"The generation was {g.status.value}")
                    return
                if time.monotonic() >= deadline:
                    try:
                        await service.cancel(project_id, generation_id)
                    except Conflict:  # it ended this moment: the next read answers with it
                        continue
                    ended = True
                    yield stream_error(
                        f"The images were not ready within {wait:g} s; the request was cancelled "
                        "and refunded",
                        code="TIMEOUT",
                    )
                    return
                # Woken by the worker, NOTIFY or the sweep (generation/watch.py); no polling here.
                pause = min(KEEPALIVE_SECONDS, max(deadline - time.monotonic(), 0.01))
                await changes.wait(pause)
                if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                    last_sent = time.monotonic()
                    yield b": keep-alive\n\n"
    except ImagesmithError as exc:  # the headers are sent: the error travels as an event
        ended = True
        yield stream_error(exc.message, code=exc.code)
    except Exception as exc:
        ended = True
        log.exception("openai.stream_failed generation_id=%s", generation_id)
        yield stream_error(f"The stream failed: {type(exc).__name__}")
        cancel_later(service, project_id, generation_id)
    finally:
        if not ended:  # the client went away (the response was cancelled) before the images
            cancel_later(service, project_id, generation_id)


def cancel_later(service: GenerationService, project_id: str, generation_id: str) -> None:
    """Cancel (and refund) in a task of its own: the stream's task is being torn down."""
    task = asyncio.ensure_future(cancel_quietly(service, project_id, generation_id))
    _cancelling.add(task)
    task.add_done_callback(_cancelling.discard)


# GPT image models report tokens; ours have none to report, so the counts are zero.
NO_TOKENS = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


def stream_error(message: str, code: str | None = None) -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": code}
    return sse("error", {"error": error})


async def cancel_quietly(service: GenerationService, project_id: str, generation_id: str) -> None:
    try:
        await service.cancel(project_id, generation_id)
        log.info("openai.stream_abandoned generation_id=%s cancelled", generation_id)
    except Exception as exc:  # finished meanwhile (Conflict), or the database blipped
        log.info("openai.stream_abandoned generation_id=%s not cancelled: %r", generation_id, exc)


@router.post(
    "/images/generations",
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
    response_model=None,
)
async def create_image(
    request: Request,
    runtime: RuntimeDep,
    principal: BearerDep,
    body: Annotated[ImageGenerate, Body()],
) -> Base64JSONResponse | StreamingResponse:
    """Create images from a prompt and answer when they are done (an ordinary generation); with
    `stream`, as server-sent events: partial images while it runs, then the images."""
    core = core_request(runtime, body.prompt, body.model, body.n, body.size, body.user)
    core.seed, core.steps, core.negative_prompt = body.seed, body.steps, body.negative_prompt
    if body.stream:
        core.previews = body.partial_images or 0
        view, _created = await GenerationService(runtime).create(principal, core)
        options = StreamOptions(
            body.output_format, body.output_compression, body.quality, body.background
        )
        return stream_response(runtime, view, options)
    job = await created_job(GenerationService(runtime).create(principal, core))
    b64 = wants_b64(body.model, body.response_format)
    return await respond(request, runtime, job, b64, body.output_format, body.output_compression)


async def form_images(form: FormData) -> list[bytes]:
    files = [
        value
        for name in ("image", "image[]")
        for value in form.getlist(name)
        if isinstance(value, UploadFile)
    ]
    if not files:
        raise ParamError("image", "image is required: one or more PNG, JPEG or WebP files")
    return [await f.read(EDIT_MAX_BYTES + 1) for f in files]


def form_text(form: FormData, name: str) -> str | None:
    """A text field of an edit's form, held to the JSON route's bound (it was cut short
    silently)."""
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    if len(value) > MAX_PROMPT:
        raise ParamError(name, f"{name} must be at most {MAX_PROMPT} characters")
    return str(value)


def form_int(form: FormData, name: str, low: int, high: int) -> int | None:
    text = form_text(form, name)
    if text is None or text == "":
        return None
    # ASCII digits only ("²".isdigit() is true, and int() of it raises), and short (int() of
    # thousands of digits raises too): either was a 500.
    if not (text.isascii() and text.isdigit() and len(text) <= 20) or not low <= int(text) <= high:
        raise ParamError(name, f"{name} must be a whole number from {low} to {high}")
    return int(text)


async def image_to_image(
    request: Request, runtime: Runtime, principal: Principal, prompt: str | None
) -> Base64JSONResponse | StreamingResponse:
    """Edits and variations: the images are the generation's references, so the first is the
    img2img init image (masks: not yet)."""
    form = await limited_form(request, EDIT_MAX_BYTES, max_files=17, max_fields=20)
    images = await form_images(form)
    if form.get("mask") is not None:
        raise ParamError(
            "mask",
            "mask (inpainting) is not supported by the built-in model families yet; send the "
            "image without a mask to edit all of it",
        )
    text = prompt if prompt is not None else (form_text(form, "prompt") or "")
    if prompt is None and not text.strip():
        raise ParamError("prompt", "prompt is required for an edit")
    model = form_text(form, "model")
    core = core_request(
        runtime,
        text,
        model,
        form_int(form, "n", 1, MAX_N),
        form_text(form, "size"),
        form_text(form, "user"),
        for_images=True,
    )
    if core.width is None and core.height is None:  # size "auto", OpenAI's default
        core.width, core.height = input_shape(runtime, core.model_id, images[0])
    core.seed = form_int(form, "seed", 0, MAX_SEED)
    core.steps = form_int(form, "steps", 1, COUNT_BOUND)
    core.negative_prompt = form_text(form, "negative_prompt")
    output_format = form_text(form, "output_format")
    if output_format not in (None, "png", "jpeg", "webp"):
        raise ParamError("output_format", "output_format must be png, jpeg or webp")
    compression = form_int(form, "output_compression", 0, 100)
    if form_text(form, "stream") in ("true", "True", "1"):
        core.previews = form_int(form, "partial_images", 0, MAX_PREVIEWS) or 0
        view, _created = await GenerationService(runtime).create_with_images(
            principal, core, images, {"via": "openai", "edit": True}
        )
        options = StreamOptions(
            output_format,
            compression,
            form_text(form, "quality"),
            form_text(form, "background"),
            "image_edit",
        )
        return stream_response(runtime, view, options)
    response_format = form_text(form, "response_format")
    if response_format not in (None, "url", "b64_json"):
        raise ParamError("response_format", "response_format must be url or b64_json")
    b64 = wants_b64(model, response_format)
    service = GenerationService(runtime)
    job = await created_job(
        service.create_with_images(principal, core, images, {"via": "openai", "edit": True})
    )
    del form, images  # stored with the job: the wait does not hold the uploads
    return await respond(request, runtime, job, b64, output_format, compression)


def input_shape(
    runtime: Runtime, model_id: str | None, first: bytes
) -> tuple[int, int] | tuple[None, None]:
    """`size: auto` on an edit or a variation: the shape of the input image, as OpenAI's own
    models answer a landscape input in landscape, at the size the model's family draws that
    shape (generation/aspect.py, as for an aspect ratio). It was the model's default size,
    square: a 1024x768 photo came back squeezed into 512x512. Remote models keep their
    provider's default (their sizes are the provider's); an unknown model or an unreadable
    image is left to the create's own error."""
    try:
        spec = runtime.registry.get(model_id or runtime.settings.default_model)
    except UnknownModel:
        return None, None
    size = header_size(first) if spec.provider is None else None
    shaped = size and nearest_size(spec.family, *size, spec.min_side, spec.max_side)
    return shaped or (None, None)


EDIT_BODY = multipart_body(
    "image",
    required=("prompt",),
    prompt={"type": "string"},
    mask={"type": "string", "format": "binary"},
    n={"type": "integer"},
    size={"type": "string"},
    response_format={"type": "string", "enum": ["url", "b64_json"]},
    model={"type": "string"},
    stream={"type": "boolean"},
    partial_images={"type": "integer", "minimum": 0, "maximum": MAX_PREVIEWS},
)


@router.post(
    "/images/edits",
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
    openapi_extra=EDIT_BODY,
    response_model=None,
)
async def edit_image(
    request: Request, runtime: RuntimeDep, principal: BearerDep
) -> Base64JSONResponse | StreamingResponse:
    """Edit an image with a prompt (img2img from the first image); `stream` as for generations."""
    return await image_to_image(request, runtime, principal, None)


@router.post(
    "/images/variations",
    responses=ERRORS,
    openapi_extra=multipart_body("image"),
    response_model=None,
)
async def image_variations(
    request: Request, runtime: RuntimeDep, principal: BearerDep
) -> Base64JSONResponse | StreamingResponse:
    """Variations of an image (img2img with no prompt)."""
    return await image_to_image(request, runtime, principal, "")


def model_object(spec: ModelSpec) -> dict[str, Any]:
    return {"id": spec.id, "object": "model", "created": 0, "owned_by": "imagesmith"}


@router.get("/models", responses=error_responses(401, 429))
async def list_models(runtime: RuntimeDep, _principal: BearerDep) -> dict[str, Any]:
    """The models this server can run, as OpenAI lists models."""
    return {"object": "list", "data": [model_object(spec) for spec in runtime.registry.all()]}


@router.get("/models/{model_id}", responses=error_responses(401, 404, 429))
async def get_model(runtime: RuntimeDep, _principal: BearerDep, model_id: str) -> dict[str, Any]:
    """One model."""
    try:
        return model_object(runtime.registry.get(model_id))
    except UnknownModel:
        raise NotFound(
            f"The model '{model_id[:100]}' does not exist", code="MODEL_NOT_FOUND"
        ) from None
