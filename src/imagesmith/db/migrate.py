"""Run Alembic migrations from code; the server migrates on start."""

from __future__ import annotations

import contextlib
from pathlib import Path

from alembic import command
from alembic.config import Config

from imagesmith.config import Settings
from imagesmith.db.engine import sync_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(settings.resolved_database_url))
    return cfg


def upgrade(settings: Settings) -> None:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), "head")
    if settings.is_sqlite:
        use_wal(settings)


def use_wal(settings: Settings) -> None:
    """Switch the file to WAL once, here, alone. The switch needs the database to itself: left
    to the pools, two first connections (the embedded worker registering, the webhook sender's
    first round) raced for it and one failed at once with "database is locked" (found by CI)."""
    import sqlite3

    path = settings.resolved_database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
