"""A generation with what its renderers show: its images, references, slugs and balance."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.generation.repository import GenerationRepository
from imagesmith.generation.schemas import GenerationView
from imagesmith.image.repository import ImageRepository
from imagesmith.models import Generation


async def build_view(session: AsyncSession, generation: Generation) -> GenerationView:
    ids = generation.output_ids()
    refs = generation.reference_ids()
    found = await ImageRepository(session).by_ids(ids + refs)
    images = [found[i] for i in ids if i in found]
    org_slug, project_slug, balance = await GenerationRepository(session).project_card(
        generation.project_id
    )
    view = GenerationView(
        generation,
        images[0] if images else None,
        org_slug,
        project_slug,
        images,
        [found[i] for i in refs if i in found],
    )
    view.remaining_credits = balance
    return view
