"""Process and module boundaries: the API never imports torch; the store stays in its folder."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from imagesmith.storage.local import LocalStore
from tests.serverproc import run_cli


def test_importing_and_building_the_app_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from imagesmith.app import create_app\n"
        "from imagesmith import cli\n"
        "create_app()\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_local_store_round_trip_and_containment(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "images")

    async def scenario() -> None:
        await store.put("org/proj/img/abc", b"\x89PNG data", "image/png")
        got = await store.get("org/proj/img/abc")
        assert got is not None and got.data == b"\x89PNG data" and got.content_type == "image/png"
        await store.put("org/proj/img/abc", b"new", "image/png")  # overwrite in place
        assert (await store.get("org/proj/img/abc")).data == b"new"  # type: ignore[union-attr]
        await store.delete("org/proj/img/abc")
        assert await store.get("org/proj/img/abc") is None
        assert not await store.exists("org/proj/img/abc")
        with pytest.raises(ValueError, match="escapes"):
            await store.put("../outside", b"x", "text/plain")

    asyncio.run(scenario())
    assert not (tmp_path / "outside").exists()


def test_models_list_names_the_builtins(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "IMAGESMITH_DATA_DIR": str(tmp_path)}
    result = run_cli(env, "models", "list")
    assert result.returncode == 0
    for model_id in ("tiny-sd", "sd-turbo", "sdxl-turbo", "sdxl", "sd15"):
        assert model_id in result.stdout
