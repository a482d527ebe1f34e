"""One sweep for every waiter in a process. Waiters (`Prefer: wait`, the synchronous dialects,
event streams) sleep until the notifier wakes them; wake-ups from this process are never lost,
and other processes' arrive by NOTIFY. What could still be missed — a worker in another process
on SQLite, a NOTIFY lost while the listener reconnects — this sweep catches: every interval, one
query reads the state of every generation someone here waits on, and wakes the waiters of those
that changed (for a step or a preview, only those that follow progress). A thousand waiters
cost one query an interval, not a thousand.

An API with its embedded worker on SQLite hears everything until another process runs jobs on
the same database (an `imagesmith worker` started beside it): the sweep looks for one in the
workers table every interval, and while there is one, this process counts as not hearing and
sweeps every `poll_seconds` (`Runtime.hear_only_this_process`). Not seen: a second API with
`--no-worker` on the same SQLite file (it registers no worker); what it queues or cancels
reaches this process by the looks and sweeps that a missed wake-up costs anyway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from imagesmith.db.base import utcnow
from imagesmith.generation.workers import REGISTERED_HERE, WorkerRepository
from imagesmith.models import Generation
from imagesmith.runtime import Runtime

log = logging.getLogger(__name__)
CHUNK = 500
PROGRESS_AT = 3  # a row's state: status, job_version, retry_count, then its progress
# A worker is running when it beat within this long (it beats every 5 s).
WORKER_LIVE = timedelta(seconds=15)


class ChangeSweep:
    def __init__(self, runtime: Runtime, *, count_workers: bool = False):
        self.rt = runtime
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._count_workers = count_workers

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._count_workers:
                await self.count_workers()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rt.notifier.recheck_seconds)
            if stop.is_set():
                return
            try:
                await self.sweep()
            except Exception as exc:  # the database blipped: the next sweep tries again
                log.warning("wait.sweep_failed error=%r", exc)

    async def count_workers(self) -> None:
        """Hear only this process while no worker of another process runs on the database."""
        try:
            async with self.rt.db.read() as session:
                elsewhere = await WorkerRepository(session).any_live_besides(
                    set(REGISTERED_HERE), utcnow() - WORKER_LIVE
                )
        except Exception as exc:  # the next interval looks again
            log.warning("wait.workers_look_failed error=%r", exc)
            return
        self.rt.hear_only_this_process(not elsewhere)

    async def sweep(self) -> None:
        watched = self.rt.notifier.watched()
        if not watched:
            self._seen.clear()
            return
        state: dict[str, tuple[Any, ...]] = {}
        async with self.rt.db.read() as session:
            for start in range(0, len(watched), CHUNK):
                rows = await session.execute(
                    select(
                        Generation.id,
                        Generation.status,
                        Generation.job_version,
                        Generation.retry_count,
                        Generation.progress_step,
                        Generation.previews_ready,
                    ).where(Generation.id.in_(watched[start : start + CHUNK]))
                )
                for row in rows:
                    state[row[0]] = tuple(row[1:])
        for generation_id in watched:
            now = state.get(generation_id)
            before = self._seen.get(generation_id)
            if before is None:
                # First sight: the waiter has just read it. Wake it only for an ending (or a
                # deletion) it may have missed; a missed step shows with the next change.
                if now is None or now[0].is_terminal:
                    self.rt.notifier.wake_changed(generation_id)
            elif now != before:
                # The first three (status, run, retries) unchanged: only a step or a preview.
                progress = now is not None and now[:PROGRESS_AT] == before[:PROGRESS_AT]
                self.rt.notifier.wake_changed(generation_id, progress=progress)
        self._seen = {gid: value for gid, value in state.items()}
