"""Load through the synchronous paths, against a server as the README starts it (the demo
model, SQLite, the embedded worker): each client sends its next request when the last one has
answered. Jobs per second with one client, then with --clients, then one again, per path; every
answer must be a success.

    .venv/bin/python bench/bench_sync_load.py [--clients 300] [--seconds 30]
        [--paths openai,stablecog,native]

openai: POST /v1/images/generations (64x64, n=1); stablecog: POST /v1/image/generation/create
(64x64); native: POST /api/v1/generations with `Prefer: wait=60`. A phase counts the answers
that came within its time plus those in flight at its end (they are waited for: the time counts).
127.0.0.1 only. Not a test."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, create_key  # noqa: E402

PROMPT = "a red circle on a blue background"


async def ask(client: httpx.AsyncClient, path: str) -> bool:
    if path == "openai":
        answer = await client.post(
            "/v1/images/generations", json={"prompt": PROMPT, "size": "64x64", "n": 1}
        )
        return answer.status_code == 200 and len(answer.json()["data"]) == 1
    if path == "stablecog":
        answer = await client.post(
            "/v1/image/generation/create", json={"prompt": PROMPT, "width": 64, "height": 64}
        )
        return answer.status_code == 200 and len(answer.json()["outputs"]) == 1
    answer = await client.post(
        "/api/v1/generations",
        headers={"Prefer": "wait=60"},
        json={"prompt": PROMPT, "autoEnhance": False},
    )
    return answer.status_code == 201 and answer.json()["data"]["status"] == "success"


async def phase(url: str, key: str, path: str, clients: int, seconds: float) -> str:
    done: list[float] = []
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}

    async def one(stop: float) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=180) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    ok = await ask(client, path)
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    continue
                if ok:
                    done.append(time.perf_counter() - started)
                else:
                    errors.append("not a success")

    start = time.monotonic()
    await asyncio.gather(*(one(start + seconds) for _ in range(clients)))
    elapsed = time.monotonic() - start
    p50 = statistics.median(done) if done else float("nan")
    return (
        f"{len(done) / elapsed:.2f} jobs/s ({len(done)} in {elapsed:.1f} s, latency p50 "
        f"{p50:.2f} s, {len(errors)} errors{': ' + errors[0] if errors else ''})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--paths", default="openai,stablecog,native")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagesmith-sync-"))
    server = Server(work / "srv", work / "models", default_model="demo").start()
    try:
        key = create_key(server.env, "bench", "sync")
        for path in args.paths.split(","):
            for clients in (1, args.clients, 1):
                line = asyncio.run(phase(server.url, key, path, clients, args.seconds))
                print(f"{path}, clients={clients}: {line}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
