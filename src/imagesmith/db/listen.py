"""PostgreSQL LISTEN/NOTIFY: publish wake-ups, and turn other processes' into local ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from imagesmith.db.engine import libpq_dsn
from imagesmith.db.notify import CHANGED_CHANNEL, JOBS_CHANNEL, Notifier

log = logging.getLogger(__name__)
APPLICATION_NAME = "imagesmith-listen"  # how pg_stat_activity shows the LISTEN connection
HEARTBEAT = 30.0  # seconds between checks that the LISTEN connection still answers


class PgPublisher:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def __call__(self, channel: str, payload: str) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
                await conn.commit()
        except Exception as exc:  # a lost wake-up costs one poll; never fail the caller
            log.warning("notify.failed channel=%s error=%s", channel, exc)


async def listen(
    database_url: str, notifier: Notifier, stop: asyncio.Event, heartbeat: float = HEARTBEAT
) -> None:
    """Hold one LISTEN connection; reconnect with backoff until `stop` is set. A connection the
    server closed ends at once; one lost without a word (a dead host, a dropped NAT entry) is
    found by the heartbeat query."""
    delay = 0.5

    def heard(_conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            notifier.wake_work()
        elif channel == CHANGED_CHANNEL:
            notifier.wake_from_payload(payload)

    while not stop.is_set():
        try:
            conn = await asyncpg.connect(
                libpq_dsn(database_url), server_settings={"application_name": APPLICATION_NAME}
            )
            try:
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(JOBS_CHANNEL, heard)
                await conn.add_listener(CHANGED_CHANNEL, heard)
                notifier.set_hearing(True)
                delay = 0.5
                # Anything queued while we were not listening is found by the next poll.
                notifier.wake_work()
                while True:
                    try:
                        await asyncio.wait_for(_first(stop, lost), heartbeat)
                        break
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), heartbeat)
                if lost.is_set() and not stop.is_set():
                    raise ConnectionError("the LISTEN connection was closed")
            finally:
                notifier.set_hearing(False)  # until the next connection listens
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listen.reconnect error=%r retry_in=%.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
