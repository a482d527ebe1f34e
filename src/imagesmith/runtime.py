"""The long-lived objects one process shares: settings, database, store, model catalogue,
wake-ups and rate limiter. Everything here is infrastructure: services build on it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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
        return cls(
            settings=settings,
            db=db,
            store=open_store(settings),
            registry=ModelRegistry.load(settings.models_file),
            notifier=Notifier(publisher_for(settings, db), settings.wait_recheck_seconds),
            rate_limiter=RateLimiter(settings),
        )

    def for_another_loop(self) -> Runtime:
        """The same process's runtime for a thread with its own event loop (the embedded
        worker): its own database pool (connections belong to the loop that opened them), and a
        notifier that shares this one's waiters, so wake-ups cross between the loops."""
        db = Database(self.settings, priority=True)
        return dataclasses.replace(
            self, db=db, notifier=self.notifier.sibling(publisher_for(self.settings, db))
        )

    def hear_only_this_process(self, alone: bool) -> None:
        """On SQLite, whether this is the only process that queues and runs jobs. SQLite carries
        no wake-ups between processes, so beside others (a `--no-worker` API and its `imagesmith
        worker`s, or an API and a separate worker beside its embedded one) nothing heard proves
        nothing changed: waiters' sweep runs every `poll_seconds`, and claims never skip a look."""
        settings = self.settings
        self.notifier.recheck_seconds = (
            settings.wait_recheck_seconds
            if alone
            else min(settings.poll_seconds, settings.wait_recheck_seconds)
        )
        self.notifier.set_hearing(alone)

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """On PostgreSQL, hear other processes' wake-ups for as long as the block runs."""
        if self.settings.is_sqlite:
            yield
            return
        from imagesmith.db.listen import listen

        self.notifier.set_hearing(False)  # until the LISTEN connection is up
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


def publisher_for(settings: Settings, db: Database) -> Any:
    """On PostgreSQL, wake-ups go to the other processes by NOTIFY over this pool."""
    if settings.is_sqlite:
        return None
    from imagesmith.db.listen import PgPublisher

    return PgPublisher(db.engine)
