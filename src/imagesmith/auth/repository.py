"""Every query on organizations, projects and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.models import ApiKey, EndUser, Organization, Project, RefreshToken

# What every authenticated request asks, built once: building a statement and its cache key
# costs more CPU than SQLAlchemy's whole execution of a built one (bench/RESULTS.md).
KEY_AND_OWNERS = (
    select(ApiKey, Organization, Project)
    .outerjoin(Organization, Organization.id == ApiKey.organization_id)
    .outerjoin(Project, Project.id == ApiKey.project_id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)


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

    async def key_and_owners(
        self, key_hash: str
    ) -> tuple[ApiKey, Organization | None, Project | None] | None:
        """The key with its organization and project (each None when the key has none): what
        every request's authentication reads, in one query."""
        row = (await self.session.execute(KEY_AND_OWNERS, {"key_hash": key_hash})).one_or_none()
        return None if row is None else (row[0], row[1], row[2])

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


class EndUserRepository:
    """Every query on end users and their refresh tokens."""

    def __init__(self, session: AsyncSession):
        self.session = session

    async def by_email(self, project_id: str, email: str) -> EndUser | None:
        result = await self.session.execute(
            select(EndUser).where(EndUser.project_id == project_id, EndUser.email == email)
        )
        return result.scalar_one_or_none()

    async def get(self, project_id: str, user_id: str) -> EndUser | None:
        result = await self.session.execute(
            select(EndUser).where(EndUser.project_id == project_id, EndUser.id == user_id)
        )
        return result.scalar_one_or_none()

    async def add(self, row: EndUser | RefreshToken) -> None:
        self.session.add(row)
        await self.session.flush()

    async def page(
        self,
        project_id: str,
        limit: int,
        offset: int,
        search: str | None = None,
        is_active: bool | None = None,
    ) -> tuple[list[EndUser], int]:
        conditions: list[Any] = [EndUser.project_id == project_id]
        if search:
            pattern = f"%{search.lower()}%"
            conditions.append(
                or_(EndUser.email.like(pattern), func.lower(EndUser.full_name).like(pattern))
            )
        if is_active is not None:
            conditions.append(EndUser.is_active.is_(is_active))
        total = (
            await self.session.execute(select(func.count(EndUser.id)).where(*conditions))
        ).scalar_one()
        rows = await self.session.execute(
            select(EndUser)
            .where(*conditions)
            .order_by(EndUser.created_at.desc(), EndUser.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total)

    async def refresh_token(self, token_id: str) -> RefreshToken | None:
        result = await self.session.execute(
            select(RefreshToken).where(RefreshToken.id == token_id).with_for_update()
        )
        return result.scalar_one_or_none()

    async def retire_refresh_tokens(self, user_id: str, now: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.end_user_id == user_id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
