"""What the native API answers, as typed objects (fields in snake_case; unknown fields the
server adds later are kept, not refused)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr
from pydantic.alias_generators import to_camel

Status = Literal["pending", "processing", "success", "failed", "cancelled"]
TERMINAL = ("success", "failed", "cancelled")
DELETED = "deleted"  # an event stream's last status when the generation was deleted meanwhile


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", protected_namespaces=()
    )
    # Set by the client that fetched it, so `download` can use the same connection.
    _fetch: Callable[[str], bytes] | None = PrivateAttr(default=None)


class Progress(Model):
    step: int
    total: int

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class OutputImage(Model):
    """An output as a generation lists it."""

    id: str
    storage_url: str
    mime_type: str = "image/png"
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    alias: str | None = None


class Image(Model):
    """An image in the project's library (generated or uploaded)."""

    id: str
    project_id: str | None = None
    flow_id: str | None = None
    generation_id: str | None = None
    storage_url: str
    mime_type: str = "image/png"
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    source: str | None = None
    alias: str | None = None
    meta: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def download(self, path: str | Path) -> Path:
        """Write the image's bytes to `path` (a folder: `<id>.png` inside it)."""
        return _save(self, self.storage_url, self.id, path)


class Generation(Model):
    id: str
    project_id: str | None = None
    flow_id: str | None = None
    status: Status
    prompt: str
    original_prompt: str | None = None
    model: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    num_outputs: int = 1
    alias: str | None = None
    flow_alias: str | None = None
    output_image_id: str | None = None
    output_image: OutputImage | None = None
    output_images: list[OutputImage] = []
    progress: Progress | None = None
    processing_time_ms: int | None = None
    retry_count: int = 0
    error_message: str | None = None
    meta: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Terminal: success, failed or cancelled."""
        return self.status in TERMINAL

    def download(self, path: str | Path, index: int = 0) -> Path:
        """Write output `index` to `path` (a folder: `<image id>.png` inside it)."""
        if not self.output_images:
            raise ValueError(f"Generation {self.id} has no output images (status {self.status})")
        image = self.output_images[index]
        return _save(self, image.storage_url, image.id, path)


class GenerationEvent(Model):
    """One server-sent event of `GET /api/v1/generations/:id/events`."""

    id: str
    status: Status
    progress: Progress | None = None
    retry_count: int = 0
    error_message: str | None = None
    output_image_id: str | None = None


class Flow(Model):
    id: str
    project_id: str | None = None
    aliases: dict[str, str] = {}
    generation_count: int = 0
    image_count: int = 0
    meta: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None


class LiveScope(Model):
    id: str
    slug: str
    allow_new_generations: bool = True
    new_generations_limit: int | None = None
    current_generations: int = 0
    last_generated_at: datetime | None = None
    meta: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _save(owner: Model, url: str, name: str, path: str | Path) -> Path:
    if owner._fetch is None:
        raise RuntimeError(
            "This object came from an AsyncClient (or none): use `await client.download(url, "
            "path)` instead"
        )
    target = Path(path)
    if target.is_dir():
        target = target / f"{name}.png"
    target.write_bytes(owner._fetch(url))
    return target
