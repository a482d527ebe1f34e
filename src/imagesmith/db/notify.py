"""Wake-ups: a generation changed, or new work is queued.

In one process these are asyncio events. On PostgreSQL every process also publishes them with
NOTIFY and a listener turns other processes' notifications into local wake-ups, so an API can
answer `Prefer: wait` the moment a remote worker finishes, and idle remote workers start at once.
Waiters re-read the database when woken, and every `recheck_seconds` without a wake-up, so a
lost notification costs at most that much delay — and a thousand idle waiters cost no reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

JOBS_CHANNEL = "imagesmith_jobs"
CHANGED_CHANNEL = "imagesmith_generation"

Publisher = Callable[[str, str], Coroutine[Any, Any, None]]


class Notifier:
    def __init__(self, publish: Publisher | None = None, recheck_seconds: float = 5.0) -> None:
        self.recheck_seconds = recheck_seconds
        self._changed: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._work = asyncio.Event()
        self._publish = publish
        self._pending: set[asyncio.Task[None]] = set()

    def _broadcast(self, channel: str, payload: str) -> None:
        if self._publish is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._publish(channel, payload))
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # Local wake-ups (also what the listener calls for other processes' notifications).

    def wake_changed(self, generation_id: str) -> None:
        for event in self._changed.get(generation_id, ()):
            event.set()

    def wake_work(self) -> None:
        self._work.set()

    # Announcements: wake this process and tell the others.

    def generation_changed(self, generation_id: str) -> None:
        self.wake_changed(generation_id)
        self._broadcast(CHANGED_CHANNEL, generation_id)

    def work_queued(self) -> None:
        self.wake_work()
        self._broadcast(JOBS_CHANNEL, "")

    async def wait_changed(self, generation_id: str, timeout: float) -> None:
        """Return when the generation may have changed, or after `timeout` seconds."""
        event = asyncio.Event()
        self._changed[generation_id].add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiters = self._changed.get(generation_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._changed[generation_id]

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def drain(self) -> None:
        """Let announcements already made reach the database before shutdown."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=2)
