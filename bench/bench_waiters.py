"""What clients that wait cost the API while nothing finishes: N clients each hold one request
open against `serve --no-worker` (their jobs stay queued), and the API process's CPU is read
from /proc over a window. Waiting should cost (almost) nothing: a waiter sleeps until its job
changes, and a sweep per process re-reads all of them at once.

    .venv/bin/python bench/bench_waiters.py [--clients 0,16,200] [--seconds 20]
        [--dialect openai|native|stablecog]
        [--src old=/tmp/old/src,new=src]   # other checkouts' `src` folders, alternating

openai: `POST /v1/images/generations` (waits for the images, cancels if the client leaves);
native: `POST /api/v1/generations` with `Prefer: wait=280`; stablecog: its synchronous create.
Prints the API's CPU ms a second and its RSS. 127.0.0.1 only."""

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

from bench_load import rss_mb  # noqa: E402  (this folder is on sys.path)
from tests.serverproc import Server, cpu_seconds, create_key  # noqa: E402


def request(dialect: str, key: str) -> tuple[str, dict[str, str], dict[str, object]]:
    if dialect == "openai":
        body: dict[str, object] = {"model": "demo", "prompt": "a red circle"}
        return "/v1/images/generations", {"Authorization": f"Bearer {key}"}, body
    if dialect == "stablecog":
        body = {"prompt": "a red circle", "model_id": "demo"}
        return "/v1/image/generation/create", {"Authorization": f"Bearer {key}"}, body
    body = {"prompt": "a red circle", "autoEnhance": False}
    return "/api/v1/generations", {"X-API-Key": key, "Prefer": "wait=280"}, body


async def hold(url: str, key: str, dialect: str, clients: int, seconds: float, pid: int) -> float:
    """CPU ms a second of `pid` while `clients` requests wait (measured after they are in)."""
    path, headers, body = request(dialect, key)
    users = [httpx.AsyncClient(base_url=url, timeout=600) for _ in range(clients)]
    waiting = [asyncio.ensure_future(u.post(path, json=body, headers=headers)) for u in users]
    try:
        async with httpx.AsyncClient(base_url=url) as probe:  # every request created
            for _ in range(600):
                ready = (await probe.get("/health/ready")).json()
                if ready["queue"]["pending"] >= clients:
                    break
                await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # and waiting
        assert not any(w.done() for w in waiting), [w.result().text[:200] for w in waiting][:1]
        before, start = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        return (cpu_seconds(pid) - before) * 1000 / (time.monotonic() - start)
    finally:
        for w in waiting:
            w.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.gather(*(u.aclose() for u in users))


def measure(src: str | None, args: argparse.Namespace) -> dict[int, tuple[float, float]]:
    work = Path(tempfile.mkdtemp(prefix="imagesmith-waiters-"))
    server = Server(work / "srv", work / "models")
    if src:
        server.env["PYTHONPATH"] = str(Path(src).resolve())
    server.start("--no-worker")
    try:
        key = create_key(server.env, "bench", "waiters")
        out = {}
        for n in args.counts:
            rate = asyncio.run(hold(server.url, key, args.dialect, n, args.seconds, server.pid))
            out[n] = (rate, rss_mb(server.pid))
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="0,16,200")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--dialect", choices=("openai", "native", "stablecog"), default="openai")
    parser.add_argument("--src", default="", help="NAME=PATH,… of src folders to compare")
    args = parser.parse_args()
    args.counts = [int(n) for n in args.clients.split(",")]
    variants = [v.split("=", 1) for v in args.src.split(",")] if args.src else [["this", ""]]
    runs: dict[str, list[dict[int, tuple[float, float]]]] = {name: [] for name, _ in variants}
    for name, src in variants + variants[::-1] if len(variants) > 1 else variants:
        print(f"measuring {name} {src}", flush=True)
        runs[name].append(measure(src or None, args))
    print("command: " + " ".join([".venv/bin/python", "bench/bench_waiters.py", *sys.argv[1:]]))
    print()
    print("| code | waiting clients | API CPU ms a second | API RSS MB |")
    print("|---|---|---|---|")
    for name, got in runs.items():
        for n in args.counts:
            cpu = statistics.median(run[n][0] for run in got)
            rss = statistics.median(run[n][1] for run in got)
            print(f"| {name} | {n} | {cpu:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
