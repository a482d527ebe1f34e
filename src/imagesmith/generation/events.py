"""In-process wake-ups: a generation changed, or new work is queued.

Waiters always re-read the database, so a missed or remote change costs at most one poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._changed: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._work = asyncio.Event()

    def generation_changed(self, generation_id: str) -> None:
        for event in self._changed.get(generation_id, ()):
            event.set()

    async def wait_changed(self, generation_id: str, timeout: float) -> None:
        """Return when the generation may have changed, or after `timeout` seconds."""
        event = asyncio.Event()
        self._changed[generation_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._changed.get(generation_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._changed[generation_id]

    def work_queued(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()
