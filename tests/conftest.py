"""Shared fixtures: one tiny-model folder per session, one real server per module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import Server, create_key


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The first model child builds tiny-sd here; later servers reuse it.
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"), models_dir, lease_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key_a(server: Server) -> str:
    return create_key(server.env, "acme", "web")


@pytest.fixture(scope="module")
def key_b(server: Server) -> str:
    return create_key(server.env, "globex", "app")


@pytest.fixture()
def api(server: Server, key_a: str) -> Iterator[httpx.Client]:
    with server.client(key_a) as client:
        yield client


def wait_terminal(client: httpx.Client, generation_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(f"/api/v1/generations/{generation_id}").json()["data"]
        if data["status"] in ("success", "failed", "cancelled"):
            return data
        time.sleep(0.1)
    raise AssertionError(f"generation {generation_id} did not finish: {data}")
