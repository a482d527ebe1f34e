"""`/api/v1/generations`: create, list, get, update in place, regenerate, delete."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from imagesmith.api.deps import CLIENT_CLOSED_REQUEST, LEFT, RuntimeDep, hung_up
from imagesmith.api.dialect import keyed_responses
from imagesmith.api.links import image_links
from imagesmith.api.native.auth import PrincipalDep
from imagesmith.api.native.errors import native_error
from imagesmith.api.native.render import (
    MAX_OFFSET,
    DeletedEnvelope,
    GenerationEnvelope,
    GenerationListEnvelope,
    paginated,
    render_generation,
)
from imagesmith.api.native.schemas import GenerationCreate, GenerationUpdate
from imagesmith.api.native.webhooks import render_delivery
from imagesmith.errors import GenerationNotFound
from imagesmith.generation.schemas import GenerationView, ListFilter
from imagesmith.generation.service import GenerationService
from imagesmith.models import GenerationStatus
from imagesmith.webhooks.service import WebhookService

router = APIRouter(prefix="/api/v1/generations", tags=["generations"])

PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)
PreferHeader = Annotated[
    str | None,
    Header(description="`wait=N`: hold the response up to N seconds until the job is terminal"),
]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        max_length=255,
        description="Repeat a create safely: the same key returns the same generation",
    ),
]


def wait_seconds(prefer: str | None) -> float | None:
    match = PREFER_WAIT.search(prefer or "")
    return float(match.group(1)) if match else None


async def respond(
    request: Request,
    runtime: RuntimeDep,
    view: GenerationView,
    created: bool | None,
    prefer: str | None,
    failure_is_error: bool = True,
) -> JSONResponse:
    """Render one generation, first waiting for it when the client asked with `Prefer: wait`.
    `created`: True for a new job (201, `Location`), False for an idempotent replay, None for
    an existing one (200). A request that started the work (create, update, regenerate) and
    waited for it answers a failure as `500 GENERATION_FAILED`, as the synchronous original
    does; a read (GET) answers what it read, as it would without the wait (RFC 7240: a
    preference does not change the outcome).

    Callers pass the view inline (`respond(…, await service.get(…), …)`): a wait can last a
    minute, and a thousand waiting clients that each kept their first view in a local would
    hold a thousand sets of rows; the wait itself holds only the ids and the status."""
    headers: dict[str, str] = {}
    if created is not None:
        headers["Location"] = f"/api/v1/generations/{view.generation.id}"
        if not created:
            headers["Idempotent-Replayed"] = "true"
    wait = wait_seconds(prefer)
    if wait is not None:
        if not view.generation.status.is_terminal:  # an ended job is answered as read
            project_id, generation_id = view.generation.project_id, view.generation.id
            known = view.known()
            del view
            # A client that hangs up ends the wait (its job runs on: it can read it later).
            view = await GenerationService(runtime).wait(
                project_id, generation_id, wait, known=known, gone=lambda: hung_up(request)
            )
        if view.client_left:  # the job runs on; counted as 499, not as an answer
            return native_error(CLIENT_CLOSED_REQUEST, "CLIENT_CLOSED_REQUEST", LEFT)
        headers["Preference-Applied"] = f"wait={wait:g}"
        if failure_is_error and view.generation.status is GenerationStatus.FAILED:
            # Clients written for the synchronous original expect the failure as an error.
            out = render_generation(view, image_links(request, runtime))
            return native_error(
                500,
                "GENERATION_FAILED",
                view.generation.error_message or "Generation failed",
                generationId=view.generation.id,
                data=out.model_dump(mode="json"),
            )
    out = render_generation(view, image_links(request, runtime))
    return JSONResponse(
        {"success": True, "data": out.model_dump(mode="json")},
        status_code=201 if created else 200,
        headers=headers,
    )


@router.post(
    "",
    status_code=201,
    response_model=GenerationEnvelope,
    responses={
        200: {"model": GenerationEnvelope, "description": "Idempotent replay"},
        **keyed_responses(400, 401, 403, 409, 500),
    },
)
async def create_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: GenerationCreate,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyHeader = None,
) -> JSONResponse:
    """Queue a generation; answers 201 at once with status `pending` (or waits, with `Prefer`)."""
    service = GenerationService(runtime)
    return await respond(  # the view and `created`, passed inline (see respond)
        request,
        runtime,
        *await service.create(principal, body.to_request(), idempotency_key),
        prefer,
    )


@router.get("", response_model=GenerationListEnvelope, responses=keyed_responses(400, 401, 403))
async def list_generations(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    status: Annotated[GenerationStatus | None, Query(description="Filter by status")] = None,
    flow_id: Annotated[str | None, Query(alias="flowId", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> dict[str, Any]:
    """List this project's generations, newest first."""
    project_id = principal.require_project()
    views, total = await GenerationService(runtime).page(
        project_id, ListFilter(status, flow_id, include_deleted, limit, offset)
    )
    links = image_links(request, runtime)
    return paginated(
        [render_generation(v, links).model_dump(mode="json") for v in views], total, limit, offset
    )


@router.get(
    "/{generation_id}", response_model=GenerationEnvelope, responses=keyed_responses(401, 403, 404)
)
async def get_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """One generation with its output image, progress and timings."""
    service = GenerationService(runtime)
    project_id = principal.require_project()
    return await respond(
        request, runtime, await service.get(project_id, generation_id), None, prefer, False
    )


UPDATE_DOC = (
    "Change prompt or aspectRatio (regenerates in place: same image id and URL), flowId, meta."
)


async def _update(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    body: GenerationUpdate,
    prefer: str | None,
) -> JSONResponse:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    service = GenerationService(runtime)
    project_id = principal.require_project()
    return await respond(
        request, runtime, await service.update(project_id, generation_id, changes), None, prefer
    )


@router.put(
    "/{generation_id}",
    response_model=GenerationEnvelope,
    responses=keyed_responses(400, 401, 403, 404, 500),
    description=UPDATE_DOC,
)
async def put_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    body: Annotated[GenerationUpdate, Body()],
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Update a generation; a new prompt or aspect ratio regenerates it in place."""
    return await _update(request, runtime, principal, generation_id, body, prefer)


@router.patch(
    "/{generation_id}",
    response_model=GenerationEnvelope,
    responses=keyed_responses(400, 401, 403, 404, 500),
    description=UPDATE_DOC,
)
async def patch_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    body: Annotated[GenerationUpdate, Body()],
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Same as PUT."""
    return await _update(request, runtime, principal, generation_id, body, prefer)


@router.post(
    "/{generation_id}/regenerate",
    response_model=GenerationEnvelope,
    responses=keyed_responses(401, 403, 404, 500),
)
async def regenerate_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Run again with the stored parameters; the output keeps its image id and URL."""
    service = GenerationService(runtime)
    project_id = principal.require_project()
    return await respond(
        request, runtime, await service.regenerate(project_id, generation_id), None, prefer
    )


@router.post(
    "/{generation_id}/retry",
    response_model=GenerationEnvelope,
    deprecated=True,
    responses=keyed_responses(401, 403, 404, 500),
)
async def retry_generation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Deprecated alias of /regenerate."""
    return await regenerate_generation(request, runtime, principal, generation_id, prefer)


@router.delete(
    "/{generation_id}", response_model=DeletedEnvelope, responses=keyed_responses(401, 403, 404)
)
async def delete_generation(
    runtime: RuntimeDep, principal: PrincipalDep, generation_id: str
) -> dict[str, Any]:
    """Hard-delete a generation and its image file (an image with a project alias is kept)."""
    await GenerationService(runtime).delete(principal.require_project(), generation_id)
    return {"success": True, "message": "Generation deleted", "data": {"id": generation_id}}


@router.post(
    "/{generation_id}/cancel",
    response_model=GenerationEnvelope,
    responses=keyed_responses(404, 409),
)
async def cancel_generation(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, generation_id: str
) -> JSONResponse:
    """Cancel: a pending job at once, a running one at its next step; its credits come back."""
    view = await GenerationService(runtime).cancel(principal.require_project(), generation_id)
    return await respond(request, runtime, view, None, None)


KEEPALIVE_SECONDS = 15.0


@router.get(
    "/{generation_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **keyed_responses(404)},
)
async def generation_events(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, generation_id: str
) -> StreamingResponse:
    """Server-sent events: the generation's status and progress until it ends."""
    service = GenerationService(runtime)
    project_id = principal.require_project()
    await service.get(project_id, generation_id)  # 404 before the stream starts
    links = image_links(request, runtime)

    async def stream() -> AsyncIterator[str]:
        last: dict[str, Any] | None = None
        sequence = 0
        last_sent = time.monotonic()
        with runtime.notifier.watch(generation_id, progress=True) as changes:
            while True:
                try:
                    view = await service.get(project_id, generation_id)
                except GenerationNotFound:  # deleted while the stream was open: its last event
                    sequence += 1
                    gone = {"id": generation_id, "status": "deleted"}
                    yield f"id: {sequence}\nevent: generation\ndata: {json.dumps(gone)}\n\n"
                    return
                out = render_generation(view, links)
                state = {
                    "id": out.id,
                    "status": out.status,
                    "progress": out.progress.model_dump() if out.progress else None,
                    "retryCount": out.retryCount,
                    "errorMessage": out.errorMessage,
                    "outputImageId": out.outputImageId,
                    "outputImages": [image.model_dump() for image in out.outputImages],
                }
                if state != last:
                    sequence += 1
                    yield f"id: {sequence}\nevent: generation\ndata: {json.dumps(state)}\n\n"
                    last, last_sent = state, time.monotonic()
                if view.generation.status.is_terminal or await request.is_disconnected():
                    return
                # Woken by the worker, NOTIFY or the sweep (generation/watch.py); no polling here.
                await changes.wait(KEEPALIVE_SECONDS)
                if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{generation_id}/webhooks", responses=keyed_responses(400, 404))
async def generation_webhooks(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    generation_id: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """The generation's webhook deliveries (its own webhookUrl and the project's endpoints),
    newest first: status, attempts, last status code and the next attempt."""
    rows, total = await WebhookService(runtime).generation_deliveries(
        principal.require_project(), generation_id, limit, offset
    )
    return paginated([render_delivery(d) for d in rows], total, limit, offset)
