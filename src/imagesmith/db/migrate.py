"""Run Alembic migrations from code; the server migrates on start."""

from __future__ import annotations

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
