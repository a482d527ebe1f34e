"""When each API key was last used, written off the request path.

A key's time is written at most once a LAST_USED_RESOLUTION. Written inside the request, every
request that read the key before the first write committed wrote it too: at the minute's turn a
burst of a thousand requests of one key queued a thousand write transactions (on PostgreSQL
behind the burst's creates, for the writer slots), and each request waited for its own. Now the
first request that finds the time stale starts one write in the background and goes on; the
others find it under way, or done within the resolution (they may have read the key before it
committed), and start none."""

from __future__ import annotations

import asyncio
import logging
import time

from imagesmith.auth.service import LAST_USED_RESOLUTION, KeyService
from imagesmith.db.engine import Database

log = logging.getLogger(__name__)
RESOLUTION = LAST_USED_RESOLUTION.total_seconds()


class LastUsed:
    def __init__(self, db: Database):
        self.db = db
        self._written: dict[str, float] = {}  # key id -> when this process last began writing it
        self._writing: set[asyncio.Task[None]] = set()

    def record(self, key_id: str) -> None:
        """Note that the key was used now, unless this process is writing that already or
        wrote it within the resolution."""
        now = time.monotonic()
        if now - self._written.get(key_id, -RESOLUTION) < RESOLUTION:
            return
        if len(self._written) > 10_000:  # keep only the keys written within the resolution
            self._written = {k: t for k, t in self._written.items() if now - t < RESOLUTION}
        self._written[key_id] = now
        task = asyncio.get_running_loop().create_task(self._write(key_id))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, key_id: str) -> None:
        try:
            async with self.db.transaction() as session:
                await KeyService(session).touch(key_id)
        except Exception as exc:  # informational: the next stale use writes it again
            log.warning("key.last_used_failed key_id=%s error=%r", key_id, exc)

    async def drain(self) -> None:
        """Let the writes under way finish before shutdown."""
        if self._writing:
            await asyncio.wait(set(self._writing), timeout=2)
