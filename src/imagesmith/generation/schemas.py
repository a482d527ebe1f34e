"""The core request every dialect translates into, and the view every dialect renders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagesmith.catalog.params import MAX_OUTPUTS
from imagesmith.generation.enhance import DEFAULT_TEMPLATE
from imagesmith.image.names import NEW_FLOW
from imagesmith.models import Generation, GenerationStatus, Image

MAX_PROMPT = 2000
MAX_META_BYTES = 16 * 1024  # `meta` is free JSON stored with a record: small, not a blob store


def parse_json(text: str) -> Any:
    """`json.loads` as strict as JSON: NaN and ±Infinity (which Python's parser takes and
    PostgreSQL's json type refuses) and nesting too deep to parse are ValueErrors too."""

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(text, parse_constant=constant)
    except RecursionError:  # "[[[[…": Python's parser recurses per level
        raise ValueError("nested too deeply") from None


def check_meta(value: dict[str, Any]) -> dict[str, Any]:
    """`meta` as given, or ValueError when its JSON is over MAX_META_BYTES or holds NaN or
    Infinity (Python's JSON parser takes them, PostgreSQL's json type and our answers do not)."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        raise ValueError("meta must be JSON: NaN and Infinity are not JSON values") from None
    size = len(text.encode())
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes of JSON; the limit is {MAX_META_BYTES}")
    return value


@dataclass
class GenerationRequest:
    """What the core needs; dialect adapters fill it in, the service resolves the defaults."""

    prompt: str
    aspect_ratio: str | None = "1:1"
    width: int | None = None
    height: int | None = None
    auto_enhance: bool = True
    template: str = DEFAULT_TEMPLATE
    negative_prompt: str | None = None
    model_id: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    flow_id: str | None = NEW_FLOW
    alias: str | None = None
    flow_alias: str | None = None
    reference_images: list[str] = field(default_factory=list)
    num_outputs: int = 1
    max_outputs: int = MAX_OUTPUTS  # a dialect may allow more per request (OpenAI's n: 10)
    init_image: str | None = None  # an upload reference (s3://…), an image id, or an http(s) URL
    prompt_strength: float | None = None
    previews: int = 0  # partial images for a streaming client (at most MAX_PREVIEWS)
    dialect: str = "native"
    instructions: str | None = None  # what the caller sent, as sent (devkit4ai)
    webhook_url: str | None = None  # this generation's own webhook, besides the project's
    webhook_events: list[str] | None = None  # None: the default events (webhooks/events.py)
    # How this dialect names the core fields, so errors speak the caller's language.
    field_names: dict[str, str] = field(default_factory=dict)


@dataclass
class GenerationView:
    generation: Generation
    image: Image | None
    org_slug: str
    project_slug: str
    images: list[Image] = field(default_factory=list)  # every output, in order
    references: list[Image] = field(default_factory=list)
    remaining_credits: int | None = None
    timed_out: bool = False  # a synchronous wait ran out before the job ended
    client_left: bool = False  # ... because its client hung up: nobody reads the answer
    # time.monotonic() before the read (or the create) this view came from: a waiter starting
    # from the view needs no read of its own unless a change was heard of since
    # (`Notifier.changed_since`).
    read_at: float | None = None

    def known(self) -> tuple[GenerationStatus, float] | None:
        """The status as of `read_at`, for `GenerationService.wait`."""
        return None if self.read_at is None else (self.generation.status, self.read_at)


@dataclass(frozen=True)
class OutputsPage:
    """One page of generated images, each with its generation."""

    rows: list[tuple[Image, Generation]]
    total: int
    next_cursor: str | None
    org_slug: str
    project_slug: str


@dataclass(frozen=True)
class ListFilter:
    status: GenerationStatus | None = None
    flow_id: str | None = None
    include_deleted: bool = False
    limit: int = 20
    offset: int = 0
    end_user_id: str | None = None  # only this end user's generations
    public_only: bool = False


@dataclass(frozen=True)
class OutputFilter:
    model_ids: list[str] | None = None
    scheduler_ids: list[str] | None = None
    widths: list[int] | None = None
    heights: list[int] | None = None
    steps: list[int] | None = None
    guidance_scales: list[float] | None = None
    start: datetime | None = None
    end: datetime | None = None
    ascending: bool = False
