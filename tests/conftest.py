"""Shared fixtures: one tiny-model folder per session, one real server per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
