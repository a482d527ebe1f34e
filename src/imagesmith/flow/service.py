"""Flow rules: list with counts, alias maps, regenerate the latest, delete with aliased images
kept."""

from __future__ import annotations

from dataclasses import dataclass

from imagesmith.errors import NotFound, ValidationFailed
from imagesmith.generation.repository import GenerationRepository
from imagesmith.generation.service import GenerationService
from imagesmith.image.aliases import resolve_image
from imagesmith.image.repository import ImageRepository
from imagesmith.image.service import check_alias_value
from imagesmith.limits.credits import Credits
from imagesmith.models import Flow, Generation, GenerationStatus, Image
from imagesmith.runtime import Runtime
from imagesmith.storage.base import preview_keys


class FlowNotFound(NotFound):
    code = "FLOW_NOT_FOUND"

    def __init__(self, flow_id: str):
        super().__init__(f"Flow '{flow_id}' not found in this project")


async def existing_flow(repo: ImageRepository, project_id: str, flow_id: str) -> Flow:
    flow = await repo.flow(project_id, flow_id)
    if flow is None:
        raise FlowNotFound(flow_id)
    return flow


@dataclass
class FlowView:
    flow: Flow
    generation_count: int
    image_count: int


class FlowService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    async def page(self, project_id: str, limit: int, offset: int) -> tuple[list[FlowView], int]:
        async with self.rt.db.read() as session:
            repo = ImageRepository(session)
            flows, total = await repo.flows(project_id, limit, offset)
            counts = await repo.flow_counts([f.id for f in flows])
        return [FlowView(f, *counts.get(f.id, (0, 0))) for f in flows], total

    async def get(self, project_id: str, flow_id: str) -> FlowView:
        async with self.rt.db.read() as session:
            repo = ImageRepository(session)
            flow = await existing_flow(repo, project_id, flow_id)
            counts = await repo.flow_counts([flow.id])
        return FlowView(flow, *counts.get(flow.id, (0, 0)))

    async def generations(self, project_id: str, flow_id: str) -> list[Generation]:
        async with self.rt.db.read() as session:
            repo = ImageRepository(session)
            await existing_flow(repo, project_id, flow_id)
            return await repo.flow_generations(project_id, flow_id)

    async def images(self, project_id: str, flow_id: str) -> list[Image]:
        async with self.rt.db.read() as session:
            repo = ImageRepository(session)
            await existing_flow(repo, project_id, flow_id)
            return await repo.flow_images(project_id, flow_id)

    async def set_aliases(self, project_id: str, flow_id: str, aliases: dict[str, str]) -> FlowView:
        """Merge `{"@alias": image id or alias}` into the flow's alias map."""
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            flow = await existing_flow(repo, project_id, flow_id)
            merged = dict(flow.aliases or {})
            for alias, ref in aliases.items():
                check_alias_value(alias, f"aliases key '{alias}'")
                image = await resolve_image(repo, project_id, ref, flow_id)
                if image is None:
                    raise ValidationFailed(f"aliases['{alias}']: no image '{ref}' in this project")
                merged[alias] = image.id
            flow.aliases = merged
        return await self.get(project_id, flow_id)

    async def remove_alias(self, project_id: str, flow_id: str, alias: str) -> FlowView:
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            flow = await existing_flow(repo, project_id, flow_id)
            if alias not in (flow.aliases or {}):
                raise NotFound(f"Flow '{flow_id}' has no alias '{alias}'", code="ALIAS_NOT_FOUND")
            flow.aliases = {k: v for k, v in flow.aliases.items() if k != alias}
        return await self.get(project_id, flow_id)

    async def regenerate(self, project_id: str, flow_id: str) -> str:
        """Re-run the flow's latest generation (same image ids and URLs)."""
        generations = await self.generations(project_id, flow_id)
        if not generations:
            raise NotFound(
                f"Flow '{flow_id}' has no generation to regenerate", code="GENERATION_NOT_FOUND"
            )
        await GenerationService(self.rt).regenerate(project_id, generations[0].id)
        return generations[0].id

    async def delete(self, project_id: str, flow_id: str) -> None:
        """Hard delete: its generations and unaliased images go; aliased images stay, unflowed."""
        doomed: list[str] = []
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            flow = await existing_flow(repo, project_id, flow_id)
            generations = await repo.flow_generations(project_id, flow_id)
            images = {image.id: image for image in await repo.flow_images(project_id, flow_id)}
            for generation in generations:
                for image_id in generation.output_ids():
                    image = images.get(image_id) or await repo.get(project_id, image_id)
                    if image is None:
                        continue
                    if image.flow_id == flow_id:
                        images[image.id] = image
                    else:  # it lives in another flow now: only its generation record goes
                        image.generation_id = None
                if generation.previews:
                    slugs = await GenerationRepository(session).project_slugs(project_id)
                    doomed += preview_keys(*slugs, generation.id, generation.previews)
                if generation.status is not GenerationStatus.SUCCESS:
                    # It will never deliver now: its run comes back, as for a generation's own
                    # delete (read again under its lock: a worker may have just finished it).
                    locked = await GenerationRepository(session).get(
                        project_id, generation.id, lock=True
                    )
                    if locked is not None and locked.status is not GenerationStatus.SUCCESS:
                        await Credits(session).refund_run(locked)
                await session.delete(generation)
            for image in images.values():
                if image.alias is None:
                    doomed.append(image.storage_key)
                    await repo.forget_everywhere(project_id, image.id)
                    await session.delete(image)
                else:
                    image.flow_id = None
                    image.generation_id = None
            await session.delete(flow)
        for generation in generations:  # waiters and streams learn it is gone
            self.rt.notifier.generation_changed(generation.id)
        for key in doomed:
            await self.rt.store.delete(key)
