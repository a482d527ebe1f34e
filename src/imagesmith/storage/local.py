"""Local-folder adapter: one file per object plus a sidecar with its content type."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from imagesmith.storage.base import StoredObject


class LocalStore:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"Storage key escapes the store: {key!r}")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data, content_type)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half an image (regenerate-in-place overwrites).
        for target, payload in (
            (path.with_name(path.name + ".type"), content_type.encode()),
            (path, data),
        ):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, target)

    async def get(self, key: str) -> StoredObject | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        type_file = path.with_name(path.name + ".type")
        content_type = type_file.read_text() if type_file.exists() else "application/octet-stream"
        return StoredObject(data=data, content_type=content_type)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".type").unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def check(self) -> None:
        def _probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            os.unlink(tmp)

        await asyncio.to_thread(_probe)

    def public_url(self, key: str) -> str | None:
        return None
