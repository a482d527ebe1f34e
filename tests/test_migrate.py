"""Migrations: `migrate.HEAD` is Alembic's head, and a serving process never imports Alembic or
its sync PostgreSQL driver (a needed migration runs in a forked child; a database at head is
seen with one query through the serving driver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from imagesmith.config import Settings
from imagesmith.db import migrate
from tests.backends import new_backend

CHILD = """
import json, sys
from imagesmith.config import Settings
from imagesmith.db import migrate
import imagesmith.app  # what `serve` imports before it migrates
settings = Settings()
before = migrate.current_revision(settings)
migrate.upgrade_in_child(settings)
print(json.dumps([before, migrate.current_revision(settings),
                  "alembic" in sys.modules or "psycopg" in sys.modules]))
"""


def test_head_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(Settings()))
    assert script.get_current_head() == migrate.HEAD


def test_a_serving_process_migrates_without_importing_alembic(tmp_path: Path) -> None:
    # A fresh database of this run's stack (SQLite here, PostgreSQL in CI's second pass).
    env = {**os.environ, "IMAGESMITH_DATA_DIR": str(tmp_path), **new_backend(tmp_path)}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    # A fresh database is migrated (by the child), then seen at head; Alembic and psycopg (the
    # migrations' driver) never loaded.
    assert runs == [[None, migrate.HEAD, False], [migrate.HEAD, migrate.HEAD, False]]
