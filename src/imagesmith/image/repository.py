"""Every query on images and flows (the generation repository keeps the queue's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.image.schemas import ImageFilter
from imagesmith.models import Flow, Generation, Image, ImageSource
from imagesmith.models.generation import ref_image_id


class ImageRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    # Images -------------------------------------------------------------------------------

    async def get(self, project_id: str, image_id: str) -> Image | None:
        result = await self.session.execute(
            select(Image).where(Image.id == image_id, Image.project_id == project_id)
        )
        return result.scalar_one_or_none()

    async def by_ids(self, image_ids: list[str]) -> dict[str, Image]:
        """Images by id in any project: callers pass ids read from their own project's rows."""
        if not image_ids:
            return {}
        rows = await self.session.execute(select(Image).where(Image.id.in_(image_ids)))
        return {image.id: image for image in rows.scalars()}

    async def by_alias(self, project_id: str, alias: str) -> Image | None:
        result = await self.session.execute(
            select(Image).where(
                Image.project_id == project_id, Image.alias == alias, Image.deleted_at.is_(None)
            )
        )
        return result.scalar_one_or_none()

    async def latest(
        self, project_id: str, source: ImageSource, flow_id: str | None, first: bool = False
    ) -> Image | None:
        conditions: list[Any] = [
            Image.project_id == project_id,
            Image.source == source,
            Image.deleted_at.is_(None),
        ]
        if flow_id is not None:
            conditions.append(Image.flow_id == flow_id)
        order = (
            (Image.created_at.asc(), Image.id.asc())
            if first
            else (Image.created_at.desc(), Image.id.desc())
        )
        result = await self.session.execute(
            select(Image).where(*conditions).order_by(*order).limit(1)
        )
        return result.scalar_one_or_none()

    async def page(self, project_id: str, filters: ImageFilter) -> tuple[list[Image], int]:
        conditions: list[Any] = [Image.project_id == project_id]
        if filters.flow_id is not None:
            conditions.append(Image.flow_id == filters.flow_id)
        if filters.source is not None:
            conditions.append(Image.source == filters.source)
        if filters.alias is not None:
            conditions.append(Image.alias == filters.alias)
        if not filters.include_deleted:
            conditions.append(Image.deleted_at.is_(None))
        total = (
            await self.session.execute(select(func.count(Image.id)).where(*conditions))
        ).scalar_one()
        rows = await self.session.execute(
            select(Image)
            .where(*conditions)
            .order_by(Image.created_at.desc(), Image.id.desc())
            .limit(filters.limit)
            .offset(filters.offset)
        )
        return list(rows.scalars()), int(total)

    async def add(self, image: Image) -> None:
        self.session.add(image)
        await self.session.flush()

    async def delete(self, image: Image) -> None:
        await self.session.delete(image)
        await self.session.flush()

    async def forget_everywhere(self, project_id: str, image_id: str) -> None:
        """Remove every reference to an image: generation outputs, references, flow aliases."""
        generations = await self.session.execute(
            select(Generation).where(Generation.project_id == project_id)
        )
        for generation in generations.scalars():
            outputs = list(generation.output_image_ids or [])
            if generation.output_image_id == image_id or image_id in outputs:
                outputs = [i for i in outputs if i != image_id]
                generation.output_image_ids = outputs
                generation.output_image_id = outputs[0] if outputs else None
            refs = generation.reference_images or []
            if any(ref_image_id(ref) == image_id for ref in refs):
                generation.reference_images = [r for r in refs if ref_image_id(r) != image_id]
        for flow in await self.flows_with_image(project_id, image_id):
            flow.aliases = {k: v for k, v in (flow.aliases or {}).items() if v != image_id}

    # Flows --------------------------------------------------------------------------------

    async def flow(self, project_id: str, flow_id: str) -> Flow | None:
        result = await self.session.execute(
            select(Flow).where(Flow.id == flow_id, Flow.project_id == project_id)
        )
        return result.scalar_one_or_none()

    async def flow_any(self, flow_id: str) -> Flow | None:
        return await self.session.get(Flow, flow_id)

    async def flows(self, project_id: str, limit: int, offset: int) -> tuple[list[Flow], int]:
        total = (
            await self.session.execute(
                select(func.count(Flow.id)).where(Flow.project_id == project_id)
            )
        ).scalar_one()
        rows = await self.session.execute(
            select(Flow)
            .where(Flow.project_id == project_id)
            .order_by(Flow.updated_at.desc(), Flow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total)

    async def flows_with_image(self, project_id: str, image_id: str) -> list[Flow]:
        rows = await self.session.execute(select(Flow).where(Flow.project_id == project_id))
        return [f for f in rows.scalars() if image_id in (f.aliases or {}).values()]

    async def flow_counts(self, flow_ids: list[str]) -> dict[str, tuple[int, int]]:
        """flow id → (generation count, image count)."""
        if not flow_ids:
            return {}
        gens = dict(
            (
                await self.session.execute(
                    select(Generation.flow_id, func.count(Generation.id))
                    .where(Generation.flow_id.in_(flow_ids))
                    .group_by(Generation.flow_id)
                )
            )
            .tuples()
            .all()
        )
        imgs = dict(
            (
                await self.session.execute(
                    select(Image.flow_id, func.count(Image.id))
                    .where(Image.flow_id.in_(flow_ids), Image.deleted_at.is_(None))
                    .group_by(Image.flow_id)
                )
            )
            .tuples()
            .all()
        )
        return {fid: (int(gens.get(fid, 0)), int(imgs.get(fid, 0))) for fid in flow_ids}

    async def flow_generations(self, project_id: str, flow_id: str) -> list[Generation]:
        rows = await self.session.execute(
            select(Generation)
            .where(Generation.project_id == project_id, Generation.flow_id == flow_id)
            .order_by(Generation.created_at.desc(), Generation.id.desc())
        )
        return list(rows.scalars())

    async def flow_images(self, project_id: str, flow_id: str) -> list[Image]:
        rows = await self.session.execute(
            select(Image)
            .where(
                Image.project_id == project_id,
                Image.flow_id == flow_id,
                Image.deleted_at.is_(None),
            )
            .order_by(Image.created_at.desc(), Image.id.desc())
        )
        return list(rows.scalars())

    async def move_to_flow(
        self, project_id: str, image_ids: list[str], old: str | None, new: str | None
    ) -> None:
        """Images that were in `old` follow their generation to `new`."""
        if not image_ids:
            return
        await self.session.execute(
            update(Image)
            .where(
                Image.project_id == project_id,
                Image.id.in_(image_ids),
                Image.flow_id.is_(None) if old is None else Image.flow_id == old,
            )
            .values(flow_id=new)
            .execution_options(synchronize_session=False)
        )

    async def detach_flow(self, flow_id: str) -> None:
        await self.session.execute(
            update(Image).where(Image.flow_id == flow_id).values(flow_id=None)
        )
