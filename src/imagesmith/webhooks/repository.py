"""Webhook rows: endpoints, deliveries (the outbox) and each project's signing secrets."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.models import (
    DeliveryStatus,
    Generation,
    Project,
    WebhookDelivery,
    WebhookEndpoint,
)
from imagesmith.webhooks.signing import new_secret

PENDING = DeliveryStatus.PENDING
PROGRESS_EVENT = "generation.progress"


class WebhookRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    # Endpoints ----------------------------------------------------------------------------

    async def endpoints(self, project_id: str, *, enabled_only: bool = False) -> list[Any]:
        query = select(WebhookEndpoint).where(WebhookEndpoint.project_id == project_id)
        if enabled_only:
            query = query.where(WebhookEndpoint.enabled.is_(True))
        rows = await self.session.execute(
            query.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return list(rows.scalars())

    async def endpoint(self, project_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        row = await self.session.execute(
            select(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.project_id == project_id
            )
        )
        return row.scalar_one_or_none()

    async def endpoint_any(self, endpoint_id: str) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, endpoint_id)

    async def lock_project(self, project_id: str) -> None:
        """Hold the project row to commit (PostgreSQL): endpoint limits and secret rotations
        of one project happen one at a time."""
        await self.session.execute(
            select(Project.id).where(Project.id == project_id).with_for_update(key_share=True)
        )

    async def count_endpoints(self, project_id: str) -> int:
        count = await self.session.scalar(
            select(func.count(WebhookEndpoint.id)).where(WebhookEndpoint.project_id == project_id)
        )
        return int(count or 0)

    async def fail_pending_for_endpoint(self, endpoint_id: str, reason: str) -> None:
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == PENDING)
            .values(status=DeliveryStatus.FAILED, last_error=reason, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )

    # Deliveries ---------------------------------------------------------------------------

    def add(self, delivery: WebhookDelivery) -> None:
        self.session.add(delivery)

    async def delivery(self, project_id: str, delivery_id: str) -> WebhookDelivery | None:
        row = await self.session.execute(
            select(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.project_id == project_id
            )
        )
        return row.scalar_one_or_none()

    async def deliveries(
        self,
        project_id: str,
        *,
        generation_id: str | None = None,
        endpoint_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[WebhookDelivery], int]:
        conditions = [WebhookDelivery.project_id == project_id]
        if generation_id is not None:
            conditions.append(WebhookDelivery.generation_id == generation_id)
        if endpoint_id is not None:
            conditions.append(WebhookDelivery.endpoint_id == endpoint_id)
        total = await self.session.scalar(select(func.count(WebhookDelivery.id)).where(*conditions))
        rows = await self.session.execute(
            select(WebhookDelivery)
            .where(*conditions)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total or 0)

    async def generation_exists(self, project_id: str, generation_id: str) -> bool:
        found = await self.session.scalar(
            select(Generation.id).where(
                Generation.id == generation_id, Generation.project_id == project_id
            )
        )
        return found is not None

    async def claim_due(
        self,
        limit: int,
        now: datetime,
        locked_until: datetime,
        *,
        per_project: int,
        in_flight: Mapping[str, int],
    ) -> list[WebhookDelivery]:
        """Take up to `limit` due deliveries that no live sender holds, at most `per_project`
        of one project in flight here (`in_flight` counts this sender's), so one tenant's slow
        or flooded endpoints never hold every slot. PostgreSQL skips rows another sender is
        claiming; SQLite runs this under its write lock."""
        due = and_(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        candidates = (
            await self.session.execute(
                select(WebhookDelivery.id, WebhookDelivery.project_id)
                .where(due)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
                .limit(limit * 8)
            )
        ).all()
        counts = dict(in_flight)
        chosen: list[str] = []
        for delivery_id, project_id in candidates:
            if len(chosen) >= limit:
                break
            if counts.get(project_id, 0) < per_project:
                counts[project_id] = counts.get(project_id, 0) + 1
                chosen.append(delivery_id)
        if not chosen:
            return []
        ids = list(
            (
                await self.session.execute(
                    select(WebhookDelivery.id)
                    .where(WebhookDelivery.id.in_(chosen), due)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ids:
            return []
        claimed = await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), due)
            .values(locked_until=locked_until)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        )
        taken = set(claimed.scalars())
        rows = await self.session.execute(
            select(WebhookDelivery)
            .where(WebhookDelivery.id.in_(taken))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
            .execution_options(populate_existing=True)
        )
        return list(rows.scalars())

    async def any_due(self, now: datetime) -> bool:
        """Whether claim_due would find anything (a read: no write lock for an idle poll)."""
        found = await self.session.scalar(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
            )
            .limit(1)
        )
        return found is not None

    async def prune(self, before: datetime, progress_before: datetime, batch: int) -> int:
        """Delete up to `batch` finished deliveries created before `before` (progress events
        before `progress_before`: stale within minutes); returns how many."""
        old = or_(
            WebhookDelivery.created_at < before,
            and_(
                WebhookDelivery.event_type == PROGRESS_EVENT,
                WebhookDelivery.created_at < progress_before,
            ),
        )
        ids = list(
            (
                await self.session.execute(
                    select(WebhookDelivery.id)
                    .where(WebhookDelivery.status != PENDING, old)
                    .limit(batch)
                )
            ).scalars()
        )
        if not ids:
            return 0
        await self.session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        return len(ids)

    async def pending_count(self) -> int:
        count = await self.session.scalar(
            select(func.count(WebhookDelivery.id)).where(WebhookDelivery.status == PENDING)
        )
        return int(count or 0)

    async def next_due(self) -> datetime | None:
        value: datetime | None = await self.session.scalar(
            select(func.min(WebhookDelivery.next_attempt_at)).where(
                WebhookDelivery.status == PENDING
            )
        )
        return value

    # Secrets ------------------------------------------------------------------------------

    async def signing_secrets(self, project_id: str, now: datetime) -> list[str]:
        """The project's current secret, then the previous one while its rotation overlap
        lasts; empty when none was made yet (ensure_secret makes it)."""
        project = await self.session.get(Project, project_id, populate_existing=True)
        if project is None or not project.webhook_secret:
            return []
        found = [project.webhook_secret]
        until = project.webhook_previous_until
        if project.webhook_previous_secret and until is not None and until > now:
            found.append(project.webhook_previous_secret)
        return found

    async def ensure_secret(self, project_id: str) -> None:
        """Make the project's secret if it has none (conditional, so two first uses at once
        agree on one secret)."""
        await self.session.execute(
            update(Project)
            .where(Project.id == project_id, Project.webhook_secret.is_(None))
            .values(webhook_secret=new_secret())
            .execution_options(synchronize_session=False)
        )

    async def rotate_secret(self, project_id: str, now: datetime, overlap: timedelta) -> str:
        await self.lock_project(project_id)
        await self.ensure_secret(project_id)
        project = await self.session.get(Project, project_id, populate_existing=True)
        assert project is not None, project_id
        project.webhook_previous_secret = project.webhook_secret
        project.webhook_previous_until = now + overlap
        project.webhook_secret = new_secret()
        await self.session.flush()
        return project.webhook_secret
