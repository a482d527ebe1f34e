"""Every query on organizations, projects and API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.models import ApiKey, Organization, Project


class TenancyRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def org_by_slug(self, slug: str) -> Organization | None:
        result = await self.session.execute(select(Organization).where(Organization.slug == slug))
        return result.scalar_one_or_none()

    async def org_by_id(self, org_id: str) -> Organization | None:
        return await self.session.get(Organization, org_id)

    async def project_by_slug(self, org_id: str, slug: str) -> Project | None:
        result = await self.session.execute(
            select(Project).where(Project.organization_id == org_id, Project.slug == slug)
        )
        return result.scalar_one_or_none()

    async def project_by_id(self, project_id: str) -> Project | None:
        return await self.session.get(Project, project_id)

    async def add(self, row: Organization | Project | ApiKey) -> None:
        self.session.add(row)
        await self.session.flush()

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
        return result.scalar_one_or_none()

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def keys(
        self, project_id: str | None = None, organization_id: str | None = None
    ) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if project_id is not None:
            query = query.where(ApiKey.project_id == project_id)
        if organization_id is not None:
            query = query.where(ApiKey.organization_id == organization_id)
        return list((await self.session.execute(query)).scalars())

    async def lock_keys(self) -> None:
        """Serialize writers that decide on the keys table as a whole (bootstrap). SQLite's
        write transactions are serialized already; PostgreSQL needs the table lock."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(text("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE"))

    async def count_keys(self) -> int:
        return int((await self.session.execute(select(func.count(ApiKey.id)))).scalar_one())

    async def touch_key(self, key_id: str, now: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)
        )
