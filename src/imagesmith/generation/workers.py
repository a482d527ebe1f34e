"""Every query on the workers table."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.models import WorkerRecord

# The ids of the workers this process registered (its embedded worker, its remote runner).
REGISTERED_HERE: set[str] = set()


class WorkerRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def register(self, worker_id: str, hostname: str, pid: int, now: datetime) -> None:
        self.session.add(
            WorkerRecord(
                id=worker_id,
                hostname=hostname,
                pid=pid,
                started_at=now,
                heartbeat_at=now,
                batches_run=0,
            )
        )
        await self.session.flush()
        REGISTERED_HERE.add(worker_id)

    async def heartbeat(
        self, worker_id: str, now: datetime, device: str | None, batches_run: int
    ) -> None:
        await self.session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == worker_id)
            .values(heartbeat_at=now, device=device, batches_run=batches_run)
        )

    async def stopped(self, worker_id: str, now: datetime) -> None:
        await self.session.execute(
            update(WorkerRecord).where(WorkerRecord.id == worker_id).values(stopped_at=now)
        )

    async def any_live_besides(self, ids: Collection[str], since: datetime) -> bool:
        """Whether a worker not in `ids` beat since `since` and has not stopped."""
        found = await self.session.execute(
            select(WorkerRecord.id)
            .where(
                WorkerRecord.heartbeat_at >= since,
                WorkerRecord.stopped_at.is_(None),
                WorkerRecord.id.not_in(list(ids)),
            )
            .limit(1)
        )
        return found.first() is not None

    async def live(self, since: datetime) -> list[WorkerRecord]:
        rows = await self.session.execute(
            select(WorkerRecord)
            .where(WorkerRecord.heartbeat_at >= since, WorkerRecord.stopped_at.is_(None))
            .order_by(WorkerRecord.started_at)
        )
        return list(rows.scalars())
