"""What a request in flight costs the API process's memory: N concurrent long polls (or creates)
against `imagesmith serve --no-worker`, beside the same number against a bare FastAPI + uvicorn
app whose one route sleeps (the framework's floor). Prints RSS before and at the peak, and the
growth per request.

    .venv/bin/python bench/bench_memory.py [--requests 1000] [--kind wait|create]

Bounded: 127.0.0.1 only; each phase ends when its requests have been answered."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_load import SSL, rss_mb  # noqa: E402  (this folder is on sys.path)
from tests.serverproc import Server, create_key, free_port  # noqa: E402

BARE_APP = """
import asyncio
from fastapi import FastAPI, Header

app = FastAPI()


@app.get("/wait/{item}")
async def wait(item: str, prefer: str | None = Header(default=None)) -> dict[str, str]:
    await asyncio.sleep(8)
    return {"id": item}
"""


ONE = httpx.Limits(max_connections=1, max_keepalive_connections=1)


class Peak:
    """Samples a process's RSS every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.value, self._stop = pid, 0.0, False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop:
            self.value = max(self.value, rss_mb(self.pid))
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop = True
        return self.value


async def burst(
    url: str, headers: dict[str, str], requests: list[tuple[str, str, dict[str, Any]]]
) -> set[int]:
    """Each request on a connection of its own (one shared pool is slow at this size: see
    bench_load.py)."""

    async def one(method: str, path: str, kwargs: dict[str, Any]) -> int:
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=120, verify=SSL, limits=ONE
        ) as api:
            return (await api.request(method, path, **kwargs)).status_code

    return set(await asyncio.gather(*[one(*request) for request in requests]))


def line(name: str, before: float, peak: float, n: int, codes: set[int]) -> str:
    return (
        f"{name:28s} RSS {before:6.1f} MB -> peak {peak:6.1f} MB: +{peak - before:5.1f} MB, "
        f"{(peak - before) * 1024 / n:5.1f} KB a request (answers {sorted(codes)})"
    )


def bare(n: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix="imagesmith-bare-"))
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(folder), "bare_app:app"]
    proc = subprocess.Popen(
        [*uvicorn, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/docs", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        before = rss_mb(proc.pid)
        peak = Peak(proc.pid)
        requests = [("GET", f"/wait/{i}", {"headers": {"Prefer": "wait=8"}}) for i in range(n)]
        codes = asyncio.run(burst(url, {}, requests))
        return line("bare FastAPI + uvicorn", before, peak.stop(), n, codes)
    finally:
        proc.terminate()
        proc.wait(10)


def ours(n: int, kind: str) -> str:
    work = Path(tempfile.mkdtemp(prefix="imagesmith-memory-"))
    server = Server(work / "srv", work / "models")
    server.start("--no-worker")  # jobs stay pending: every long poll waits its full time
    try:
        key = create_key(server.env, "memory", "run")
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as api:
            made = api.post("/api/v1/generations", json={"prompt": "a red circle"})
            job = made.json()["data"]["id"]
            for _ in range(20):  # warm the caches a steady server has warm
                api.get(f"/api/v1/generations/{job}")
        before = rss_mb(server.pid)
        peak = Peak(server.pid)
        if kind == "wait":
            wait = {"headers": {"Prefer": "wait=8"}}
            requests = [("GET", f"/api/v1/generations/{job}", wait) for _ in range(n)]
        else:
            requests = [("POST", "/api/v1/generations", {"json": {"prompt": "a cat"}})] * n
        codes = asyncio.run(burst(server.url, headers, requests))
        return line(f"imagesmith ({kind})", before, peak.stop(), n, codes)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--kind", choices=("wait", "create"), default="wait")
    args = parser.parse_args()
    print(bare(args.requests), flush=True)
    print(ours(args.requests, args.kind), flush=True)


if __name__ == "__main__":
    main()
