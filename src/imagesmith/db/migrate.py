"""Run Alembic migrations from code; the server migrates on start.

Alembic (with Mako) is imported only when a migration has to run: it is ~10 MB of a serving
process's memory that it would never use again. A database already at `HEAD` is seen with one
plain query, and `serve`/`worker` run a needed migration in a short-lived child process
(`upgrade_in_child`), so the long-lived process never imports it."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from pathlib import Path
from typing import Any

from imagesmith.config import Settings
from imagesmith.db.engine import async_engine, sync_url

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (tests/test_migrate.py checks it against
# Alembic's own head: a new migration must move it).
HEAD = "0010"


def alembic_config(settings: Settings) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(settings.resolved_database_url))
    return cfg


def current_revision(settings: Settings) -> str | None:
    """The database's Alembic revision, or None (no database yet, or never migrated). Asked
    through the serving driver (asyncpg, aiosqlite), so a serving process loads no other; not
    from a thread whose event loop is running."""
    if settings.is_sqlite and not Path(sqlite_path(settings)).exists():
        return None
    return asyncio.run(_revision(settings.resolved_database_url))


async def _revision(url: str) -> str | None:
    from sqlalchemy import exc, text
    from sqlalchemy.pool import NullPool

    engine = async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return found.scalar()
    except exc.DBAPIError:  # no alembic_version table yet
        return None
    finally:
        await engine.dispose()


def upgrade(settings: Settings) -> None:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if current_revision(settings) != HEAD:
        from alembic import command

        command.upgrade(alembic_config(settings), "head")
    if settings.is_sqlite:
        use_wal(settings)


def upgrade_in_child(settings: Settings) -> None:
    """`upgrade`, with a migration that has to run done in a forked child, for a process that
    is about to serve for a long time. Call it before the process starts threads; where fork
    is not available, it migrates here."""
    if current_revision(settings) == HEAD or "fork" not in multiprocessing.get_all_start_methods():
        upgrade(settings)
        return
    child = multiprocessing.get_context("fork").Process(target=upgrade, args=(settings,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"database migration failed (exit code {child.exitcode}); see above")
    upgrade(settings)  # at head now: only the cheap checks (and SQLite's WAL switch) run here


def sqlite_path(settings: Settings) -> str:
    return settings.resolved_database_url.removeprefix("sqlite:///")


def use_wal(settings: Settings) -> None:
    """Switch the file to WAL once, here, alone. The switch needs the database to itself: left
    to the pools, two first connections (the embedded worker registering, the webhook sender's
    first round) raced for it and one failed at once with "database is locked" (found by CI)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(sqlite_path(settings), timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
