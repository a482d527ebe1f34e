"""PostgreSQL LISTEN/NOTIFY: publish wake-ups, and turn other processes' into local ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from imagesmith.db.notify import CHANGED_CHANNEL, JOBS_CHANNEL, Notifier

log = logging.getLogger(__name__)


def psycopg_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (drop the `+driver` part)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


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


async def listen(database_url: str, notifier: Notifier, stop: asyncio.Event) -> None:
    """Hold one LISTEN connection; reconnect with backoff until `stop` is set."""
    delay = 0.5
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                psycopg_dsn(database_url), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                await conn.execute(f"LISTEN {CHANGED_CHANNEL}")
                delay = 0.5
                # Anything queued while we were not listening is found by the next poll.
                notifier.wake_work()
                async for note in conn.notifies():
                    if note.channel == JOBS_CHANNEL:
                        notifier.wake_work()
                    elif note.channel == CHANGED_CHANNEL:
                        notifier.wake_changed(note.payload)
                    if stop.is_set():
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("listen.reconnect error=%s retry_in=%.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
