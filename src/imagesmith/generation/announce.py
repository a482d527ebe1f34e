"""A generation's events for webhooks: written with the status change that caused them, the
record in the native shape as the payload's `data` (generation/record.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.generation.record import render_generation
from imagesmith.generation.views import build_view
from imagesmith.image.links import ImageLinks
from imagesmith.models import Generation
from imagesmith.runtime import Runtime
from imagesmith.webhooks.outbox import record_event

# Image links in payloads when IMAGESMITH_PUBLIC_URL is not set (a worker has no request to
# take the address from): the README's own server address.
DEFAULT_LINK_BASE = "http://localhost:8000"


async def announce(
    runtime: Runtime,
    session: AsyncSession,
    generation_id: str,
    event_type: str,
    *,
    fresh: Generation | None = None,
) -> bool:
    """Write the event's deliveries in this transaction; True when any was written (then wake
    the sender after commit: `runtime.notifier.webhooks_queued()`). `fresh`: the generation as
    read after its status change, when the caller has it (a claim reads its batch at once)."""
    # Fresh: status changes are UPDATE statements that leave loaded objects as they were.
    generation = fresh or await session.get(Generation, generation_id, populate_existing=True)
    if generation is None:
        return False

    async def data() -> dict[str, Any]:
        assert generation is not None
        view = await build_view(session, generation)
        base = (runtime.settings.public_url or DEFAULT_LINK_BASE).rstrip("/")
        return render_generation(view, ImageLinks(base, runtime.store)).model_dump(mode="json")

    return await record_event(runtime.settings, session, generation, event_type, data)
