"""Alias resolution. One order, everywhere: technical aliases (@last, @first, @upload) →
flow aliases (when a flow is in context) → project aliases. Bare UUIDs are image ids."""

from __future__ import annotations

import re

from imagesmith.image.names import ALIAS_RE, UUID_RE
from imagesmith.image.repository import ImageRepository
from imagesmith.models import Image, ImageSource

PROMPT_ALIAS = re.compile(r"(?:^|(?<=\s))(@[A-Za-z0-9_-]+)")
TECHNICAL = ("@last", "@first", "@upload")


def aliases_in_prompt(prompt: str) -> list[str]:
    """`@name` tokens at the start of the prompt or after whitespace, in order, once each."""
    seen: list[str] = []
    for token in PROMPT_ALIAS.findall(prompt):
        if token not in seen:
            seen.append(token)
    return seen


async def resolve_image(
    repo: ImageRepository, project_id: str, ref: str, flow_id: str | None = None
) -> Image | None:
    """An image id or an alias → the image in this project, or None."""
    ref = ref.strip()
    if UUID_RE.match(ref):
        image = await repo.get(project_id, ref.lower())
        return image if image is not None and image.deleted_at is None else None
    if not ALIAS_RE.match(ref):
        return None
    if ref == "@last":
        return await repo.latest(project_id, ImageSource.GENERATED, flow_id)
    if ref == "@first":
        return await repo.latest(project_id, ImageSource.GENERATED, flow_id, first=True)
    if ref == "@upload":
        return await repo.latest(project_id, ImageSource.UPLOADED, flow_id)
    if flow_id is not None:
        flow = await repo.flow(project_id, flow_id)
        image_id = (flow.aliases or {}).get(ref) if flow is not None else None
        if image_id is not None:
            image = await repo.get(project_id, image_id)
            if image is not None and image.deleted_at is None:
                return image
    return await repo.by_alias(project_id, ref)
