"""The long-lived objects one process shares: settings, database, store, model catalogue,
wake-ups and rate limiter. Everything here is infrastructure: services build on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from imagesmith.catalog.models import ModelRegistry
from imagesmith.config import Settings
from imagesmith.db.engine import Database
from imagesmith.db.notify import Notifier
from imagesmith.limits.rate import RateLimiter
from imagesmith.storage import ObjectStore, open_store


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: ObjectStore
    registry: ModelRegistry
    notifier: Notifier
    rate_limiter: RateLimiter

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        db = Database(settings)
        publisher = None
        if not settings.is_sqlite:
            from imagesmith.db.listen import PgPublisher

            publisher = PgPublisher(db.engine)
        return cls(
            settings=settings,
            db=db,
            store=open_store(settings),
            registry=ModelRegistry.load(settings.models_file),
            notifier=Notifier(publisher, settings.wait_recheck_seconds),
            rate_limiter=RateLimiter(settings),
        )

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """On PostgreSQL, hear other processes' wake-ups for as long as the block runs."""
        if self.settings.is_sqlite:
            yield
            return
        from imagesmith.db.listen import listen

        stop = asyncio.Event()
        task = asyncio.create_task(listen(self.settings.resolved_database_url, self.notifier, stop))
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self.notifier.drain()
        await self.db.dispose()
