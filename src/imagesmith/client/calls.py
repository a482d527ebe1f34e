"""Every native API call the SDK makes, described once (see `_base.Call`). The clients expose
these as methods: `client.generations.get(id)` sends `generations_get(id)`."""

from __future__ import annotations

import mimetypes
import uuid
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from imagesmith.client._base import Call, PageData, deleted, drop_none, many, one
from imagesmith.client.models import Flow, Generation, Image, LiveScope

FileInput = str | Path | bytes | BinaryIO


def _id(value: str) -> str:
    return quote(value, safe="@")


def generations_create(
    prompt: str,
    *,
    aspect_ratio: str | None = None,
    model: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str | None = None,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    num_outputs: int | None = None,
    auto_enhance: bool | None = None,
    template: str | None = None,
    init_image: str | None = None,
    prompt_strength: float | None = None,
    reference_images: list[str] | None = None,
    alias: str | None = None,
    flow_id: str | None = None,
    flow_alias: str | None = None,
    meta: dict[str, Any] | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    idempotency_key: str | None = None,
) -> Call[Generation]:
    """Queue a generation (answers at once, status `pending`). An Idempotency-Key is sent
    (a fresh one unless given), so a retried create never makes two generations.
    `webhook_url`: the server also POSTs this generation's events there, signed (Standard
    Webhooks; `webhook_events` picks them, e.g. ["completed", "failed"])."""
    body = drop_none(
        {
            "prompt": prompt,
            "aspectRatio": aspect_ratio,
            "model": model,
            "seed": seed,
            "steps": steps,
            "guidanceScale": guidance_scale,
            "scheduler": scheduler,
            "negativePrompt": negative_prompt,
            "width": width,
            "height": height,
            "numOutputs": num_outputs,
            "autoEnhance": auto_enhance,
            "enhancementOptions": {"template": template} if template else None,
            "initImage": init_image,
            "promptStrength": prompt_strength,
            "referenceImages": reference_images,
            "alias": alias,
            "flowId": flow_id,
            "flowAlias": flow_alias,
            "meta": meta,
            "webhookUrl": webhook_url,
            "webhookEvents": webhook_events,
        }
    )
    key = idempotency_key or str(uuid.uuid4())
    return Call("POST", "/api/v1/generations", one(Generation), json=body,
                headers={"Idempotency-Key": key})  # fmt: skip


def generations_get(generation_id: str) -> Call[Generation]:
    return Call("GET", f"/api/v1/generations/{_id(generation_id)}", one(Generation))


def generations_list(
    *,
    status: str | None = None,
    flow_id: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Call[PageData[Generation]]:
    """Newest first; iterate the page to walk every page."""
    params = {"status": status, "flowId": flow_id, "limit": limit, "offset": offset}
    return Call("GET", "/api/v1/generations", many(Generation), params=params, paged=True)


def generations_update(
    generation_id: str,
    *,
    prompt: str | None = None,
    aspect_ratio: str | None = None,
    flow_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Call[Generation]:
    """A new prompt or aspect ratio re-runs the job into the same image (same URLs)."""
    body = drop_none(
        {"prompt": prompt, "aspectRatio": aspect_ratio, "flowId": flow_id, "meta": meta}
    )
    path = f"/api/v1/generations/{_id(generation_id)}"
    return Call("PATCH", path, one(Generation), json=body)


def generations_regenerate(generation_id: str) -> Call[Generation]:
    path = f"/api/v1/generations/{_id(generation_id)}/regenerate"
    return Call("POST", path, one(Generation), retry=False)


def generations_cancel(generation_id: str) -> Call[Generation]:
    path = f"/api/v1/generations/{_id(generation_id)}/cancel"
    return Call("POST", path, one(Generation), retry=False)


def generations_delete(generation_id: str) -> Call[str]:
    return Call("DELETE", f"/api/v1/generations/{_id(generation_id)}", deleted)


def _file(file: FileInput, filename: str | None) -> tuple[str, Any, str]:
    if isinstance(file, str | Path):
        path = Path(file)
        name = filename or path.name
        content: Any = path.read_bytes()
    else:
        name = filename or getattr(file, "name", None) or "image.png"
        content = file
    kind = mimetypes.guess_type(str(name))[0] or "application/octet-stream"
    return Path(str(name)).name, content, kind


def images_upload(
    file: FileInput,
    *,
    alias: str | None = None,
    flow_id: str | None = None,
    flow_alias: str | None = None,
    meta: dict[str, Any] | None = None,
    filename: str | None = None,
) -> Call[Image]:
    """Add a PNG, JPEG or WebP (≤ 5 MB) to the project's library."""
    import json

    fields = drop_none(
        {
            "alias": alias,
            "flowId": flow_id,
            "flowAlias": flow_alias,
            "meta": json.dumps(meta) if meta is not None else None,
        }
    )
    return Call("POST", "/api/v1/images/upload", one(Image),
                files={"file": _file(file, filename)}, data=fields, retry=False)  # fmt: skip


def images_get(ref: str) -> Call[Image]:
    """By id or @alias."""
    return Call("GET", f"/api/v1/images/{_id(ref)}", one(Image))


def images_list(
    *,
    flow_id: str | None = None,
    source: str | None = None,
    alias: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Call[PageData[Image]]:
    params = {"flowId": flow_id, "source": source, "alias": alias}
    return Call("GET", "/api/v1/images", many(Image),
                params={**params, "limit": limit, "offset": offset}, paged=True)  # fmt: skip


def images_set_alias(ref: str, alias: str | None) -> Call[Image]:
    """Assign a project @alias (None removes it)."""
    return Call("PUT", f"/api/v1/images/{_id(ref)}/alias", one(Image), json={"alias": alias})


def images_delete(ref: str) -> Call[str]:
    return Call("DELETE", f"/api/v1/images/{_id(ref)}", deleted)


def flows_list(*, limit: int = 20, offset: int = 0) -> Call[PageData[Flow]]:
    params = {"limit": limit, "offset": offset}
    return Call("GET", "/api/v1/flows", many(Flow), params=params, paged=True)


def flows_get(flow_id: str) -> Call[Flow]:
    return Call("GET", f"/api/v1/flows/{_id(flow_id)}", one(Flow))


def flows_generations(flow_id: str) -> Call[PageData[Generation]]:
    """Every generation of the flow (one page: the server does not page these)."""
    return Call("GET", f"/api/v1/flows/{_id(flow_id)}/generations", many(Generation), paged=True)


def flows_images(flow_id: str) -> Call[PageData[Image]]:
    """Every image of the flow (one page)."""
    return Call("GET", f"/api/v1/flows/{_id(flow_id)}/images", many(Image), paged=True)


def flows_set_aliases(flow_id: str, aliases: dict[str, str]) -> Call[Flow]:
    """Merge flow-scoped aliases: {"@name": image id or alias}."""
    path = f"/api/v1/flows/{_id(flow_id)}/aliases"
    return Call("PUT", path, one(Flow), json={"aliases": aliases})


def flows_delete_alias(flow_id: str, alias: str) -> Call[Flow]:
    return Call("DELETE", f"/api/v1/flows/{_id(flow_id)}/aliases/{_id(alias)}", one(Flow))


def flows_regenerate(flow_id: str) -> Call[Generation]:
    """Re-run the flow's most recent generation in place."""
    path = f"/api/v1/flows/{_id(flow_id)}/regenerate"
    return Call("POST", path, one(Generation), retry=False)


def flows_delete(flow_id: str) -> Call[str]:
    return Call("DELETE", f"/api/v1/flows/{_id(flow_id)}", deleted)


def live_create(
    slug: str,
    *,
    allow_new_generations: bool | None = None,
    new_generations_limit: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Call[LiveScope]:
    body = drop_none(
        {
            "slug": slug,
            "allowNewGenerations": allow_new_generations,
            "newGenerationsLimit": new_generations_limit,
            "meta": meta,
        }
    )
    return Call("POST", "/api/v1/live/scopes", one(LiveScope), json=body, retry=False)


def live_list(
    *, slug: str | None = None, limit: int = 20, offset: int = 0
) -> Call[PageData[LiveScope]]:
    params = {"slug": slug, "limit": limit, "offset": offset}
    return Call("GET", "/api/v1/live/scopes", many(LiveScope), params=params, paged=True)


def live_get(slug: str) -> Call[LiveScope]:
    return Call("GET", f"/api/v1/live/scopes/{_id(slug)}", one(LiveScope))


def live_update(
    slug: str,
    *,
    allow_new_generations: bool | None = None,
    new_generations_limit: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Call[LiveScope]:
    body = drop_none(
        {
            "allowNewGenerations": allow_new_generations,
            "newGenerationsLimit": new_generations_limit,
            "meta": meta,
        }
    )
    return Call("PUT", f"/api/v1/live/scopes/{_id(slug)}", one(LiveScope), json=body)


def live_delete(slug: str) -> Call[str]:
    return Call("DELETE", f"/api/v1/live/scopes/{_id(slug)}", deleted)


def live_regenerate(slug: str, image_id: str | None = None) -> Call[list[str]]:
    """Re-run one cached image of the scope, or all of them, in place; the ids re-run."""
    path = f"/api/v1/live/scopes/{_id(slug)}/regenerate"
    body = {"imageId": image_id} if image_id else None
    return Call("POST", path, lambda b: list(b["data"]["regenerated"]), json=body, retry=False)
