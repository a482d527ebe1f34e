"""The async engine and session factories; SQLite gets WAL, a busy timeout, BEGIN IMMEDIATE
for writes and a plain BEGIN for reads, and its writers queue in the process (the write gate)
rather than in SQLite's busy handler."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from imagesmith.config import Settings
from imagesmith.db.sqlite_trips import use_one_trip_cursors
from imagesmith.errors import Overloaded


def libpq_dsn(url: str) -> str:
    """The libpq form of a PostgreSQL URL, any `+driver` part dropped (other URLs as given)."""
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


def names_no_driver(url: str) -> bool:
    """A plain `postgresql://` (or `postgres://`) URL: we pick its driver. One that names its
    own (`postgresql+psycopg://`) is used as written."""
    return url.partition("://")[0] in ("postgresql", "postgres")


def async_engine(url: str, **pool: Any) -> AsyncEngine:
    """The serving engine: aiosqlite for SQLite; asyncpg for PostgreSQL, connected with the URL
    as libpq reads it (asyncpg parses `sslmode`, `sslrootcert`, `connect_timeout`, … itself;
    SQLAlchemy would pass them to `asyncpg.connect` as keywords it does not take). asyncpg is a
    third of psycopg's memory in a serving process (bench/RESULTS.md)."""
    if url.startswith("sqlite:"):
        return create_async_engine("sqlite+aiosqlite:" + url.removeprefix("sqlite:"), **pool)
    if not names_no_driver(url):
        return create_async_engine(url, **pool)
    import asyncpg

    dsn = libpq_dsn(url)

    async def connect() -> Any:
        return await asyncpg.connect(dsn)

    return create_async_engine("postgresql+asyncpg://", async_creator=connect, **pool)


def sync_url(url: str) -> str:
    """For Alembic, which migrates in a short-lived process: psycopg 3 for PostgreSQL."""
    if not names_no_driver(url):
        return url
    return "postgresql+psycopg://" + libpq_dsn(url).removeprefix("postgresql://")


def configure_sqlite(engine: Any) -> None:
    """WAL lets readers run beside the writer; BEGIN IMMEDIATE takes the write lock up front so a
    read-then-write transaction never fails with SQLITE_BUSY on lock upgrade."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        use_one_trip_cursors(dbapi_connection)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The wait first: then even this connection's first statement waits for the lock
        # instead of failing (migrate.py already put the file in WAL mode).
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Reads never take the write lock: with every read under it, 1000 long-polling clients
        # starved the worker (DESIGN §9). WAL gives a read transaction its own snapshot.
        conn.exec_driver_sql(
            "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
        )


READ_ONLY = "imagesmith_read_only"
POOL_SIZE, POOL_OVERFLOW = 10, 10
WRITERS = 12  # PostgreSQL write transactions at once per pool; the other 8 connections read
READERS = 8  # read sessions open at once per pool; more wait for a turn before one (on
# PostgreSQL, with the WRITERS, that is the whole pool)
WAIT_SECONDS = 30.0  # for a read turn: as long as SQLAlchemy's pool waits for a connection
# Set while this task holds a session (a read or a transaction): a read opened inside it takes
# no read turn. Otherwise a transaction that reads inside would wait for a turn held by readers
# that wait for a connection held by that transaction: a deadlock until the pool times out.
_IN_SESSION: ContextVar[bool] = ContextVar("imagesmith_in_session", default=False)


class _WriteGate:
    """SQLite has one write lock, and a writer that finds it taken sleeps in the busy handler
    (1, 2, 5 … 100 ms) and retries: with a thousand requests writing at once the lock goes to
    whoever retries at the right moment, creates crawl, and the worker's claims and results
    wait seconds. In one process writers queue here instead: the API's writers one at a time
    (FIFO), and a priority writer (the embedded worker, on its own loop and pool) ahead of any
    API writer that has not begun yet, so it waits at most one short transaction."""

    def __init__(self) -> None:
        self.priority_waiting = 0
        self.guard = threading.Lock()

    @asynccontextmanager
    async def priority(self) -> AsyncIterator[None]:
        with self.guard:
            self.priority_waiting += 1
        try:
            yield
        finally:
            with self.guard:
                self.priority_waiting -= 1

    async def yield_to_priority(self) -> None:
        while self.priority_waiting:
            await asyncio.sleep(0.001)


_GATES: dict[str, _WriteGate] = {}
_GATES_GUARD = threading.Lock()


def write_gate(url: str) -> _WriteGate:
    with _GATES_GUARD:
        return _GATES.setdefault(url, _WriteGate())


class Database:
    def __init__(self, settings: Settings, *, priority: bool = False):
        """`priority`: this pool's writers go ahead of the process's other writers (SQLite)."""
        url = settings.resolved_database_url
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = async_engine(url)
            configure_sqlite(self.engine.sync_engine)
        else:
            self.engine = async_engine(
                url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True
            )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self.is_sqlite = settings.is_sqlite
        self.priority = priority
        self._gate = write_gate(url) if settings.is_sqlite else None
        self._turn: asyncio.Lock | None = None  # the API's writers, one at a time (its loop)
        self._writers: asyncio.Semaphore | None = None  # PostgreSQL: writers at once
        self._readers: asyncio.Semaphore | None = None  # read sessions at once (its loop)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One short unit of work: commit on success, roll back on error."""
        try:
            async with self._write_turn(), self.sessionmaker() as session, session.begin():
                token = _IN_SESSION.set(True)
                try:
                    yield session
                finally:
                    _IN_SESSION.reset(token)
        except PoolTimeout:
            raise Overloaded() from None

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        if self._gate is None:
            # PostgreSQL takes concurrent writers, but a writer waiting for a row lock holds a
            # connection: cap them below the pool, so reads always find one.
            if self._writers is None:
                self._writers = asyncio.Semaphore(WRITERS)
            async with self._writers:
                yield
            return
        if self.priority:
            async with self._gate.priority():
                yield
            return
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            await self._gate.yield_to_priority()
            yield

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work: one consistent snapshot, no write lock (SQLite); closing
        the session ends it (the pool rolls the connection back). Never write in it."""
        try:
            async with self._read_turn(), self.read_sessionmaker() as session:
                yield session
        except PoolTimeout:
            raise Overloaded() from None

    @asynccontextmanager
    async def _read_turn(self) -> AsyncIterator[None]:
        """At most READERS read sessions at once; the others wait here, before their session
        exists. A burst of 1000 long polls waited in the pool's queue instead, each with an
        AsyncSession, its greenlet and its pool-wait frames: ~18 KB a request more
        (bench/RESULTS.md). A read opened inside another read or a transaction (the same task)
        takes no turn: it must not wait for the readers, who may be waiting for its
        connection."""
        if _IN_SESSION.get():
            yield
            return
        if self._readers is None:
            self._readers = asyncio.Semaphore(READERS)
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await self._readers.acquire()
        except TimeoutError:
            raise Overloaded() from None
        token = _IN_SESSION.set(True)
        try:
            yield
        finally:
            _IN_SESSION.reset(token)
            self._readers.release()

    async def dispose(self) -> None:
        await self.engine.dispose()
