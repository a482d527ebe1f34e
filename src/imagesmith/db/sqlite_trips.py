"""One trip to aiosqlite's thread per SQLite statement, instead of four.

aiosqlite runs each call on its connection's thread, and every call is a round trip: a queue
put that wakes the thread, then a wake-up of the event loop through its self-pipe (~60 µs of
CPU here). SQLAlchemy's adapter makes four of them per query (open a cursor, execute, fetch
all, close) and three per INSERT or UPDATE: 34 for a create, 22 for a GET, half of them only
opening and closing cursors (bench/RESULTS.md, eleventh session). `OneTripCursor` runs the
whole statement, rows included, in one call on that thread and keeps what SQLAlchemy reads
afterwards (description, rowcount, lastrowid) on the loop's side.

It leans on two private details: SQLAlchemy 2.1's `AsyncAdapt_dbapi_cursor` (the `_cursor`,
`_rows` and `_execute_mutex` it keeps; the hooks it calls to open a cursor) and aiosqlite's
`Connection._execute`/`_conn`. `use_one_trip_cursors` checks for them and leaves the stock
adapter in place where they are missing; `tests/test_queue.py` fails if it is not in use with
the versions this project installs, so an upgrade that changes them is seen, not silently
slower."""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor
from sqlalchemy.dialects.sqlite import aiosqlite as adapter


class _Done:
    """What a statement left, as SQLAlchemy reads it from a DBAPI cursor after executing."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self) -> None:
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed on the thread."""


def _run(
    conn: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[Any, int, int | None, list[Any] | None]:
    """On aiosqlite's thread: execute, fetch everything, close."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(adapter.AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # `_Done.close` is plain

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Done()

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_trip(operation, seq_of_parameters, True)

    async def _one_trip(self, operation: Any, parameters: Any, many: bool) -> OneTripCursor:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            description, rowcount, lastrowid, rows = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
        done: Any = self._cursor
        done.description, done.rowcount, done.lastrowid = description, rowcount, lastrowid
        if rows is not None:
            self._rows = collections.deque(rows)
        return self  # as aiosqlite's cursor returns itself (SQLAlchemy ignores it on SQLite)


class OneTripConnection(adapter.AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


def use_one_trip_cursors(dbapi_connection: Any) -> bool:
    """Make a fresh aiosqlite connection (as SQLAlchemy's `connect` event gives it) run each
    statement in one trip; False, changing nothing, where the private details it needs are
    not there."""
    if type(dbapi_connection) is not adapter.AsyncAdapt_aiosqlite_connection:
        return False
    if not hasattr(dbapi_connection, "_execute_mutex"):
        return False
    inner = getattr(dbapi_connection, "_connection", None)
    if inner is None or not all(hasattr(type(inner), name) for name in ("_execute", "_conn")):
        return False
    hooks = ("_make_new_cursor", "_aenter_cursor", "_execute_async", "_executemany_async")
    stock = adapter.AsyncAdapt_aiosqlite_cursor
    compatible = (
        issubclass(stock, AsyncAdapt_dbapi_cursor)
        and all(hasattr(AsyncAdapt_dbapi_cursor, name) for name in hooks)
        and hasattr(AsyncAdapt_dbapi_cursor, "_awaitable_cursor_close")
        # aiosqlite's own cursor overrides none of what OneTripCursor replaces or relies on
        # (a fix there would otherwise be thrown away unseen)
        and not {*hooks, "close", "execute", "executemany"} & set(vars(stock))
    )
    if compatible:
        dbapi_connection.__class__ = OneTripConnection
    return compatible
