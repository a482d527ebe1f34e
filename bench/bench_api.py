"""What a request costs the API process: CPU milliseconds and latency per request kind, measured
on a real server (`serve --no-worker`, so no worker shares the process and jobs stay queued).

    .venv/bin/python bench/bench_api.py [--requests 300] [--clients 1,16]
        [--src HEAD=/tmp/old/src,new=src]   # side by side: other checkouts' `src` folders

CPU is the server process's user + system time (/proc) over a phase divided by its requests: it
does not depend on how busy the rest of the machine is, latency does. With --src each checkout
runs in turn (twice, the order reversed the second time) through PYTHONPATH, so two versions of
the code are compared in one run. 127.0.0.1 only."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, cpu_seconds, create_key  # noqa: E402


def phase(
    pid: int, clients: int, count: int, send: Callable[[httpx.Client, int], httpx.Response]
) -> tuple[float, float, float]:
    """(server CPU ms per request, p50 ms, p99 ms); every answer must be a 2xx."""
    latencies: list[float] = []
    pools = [httpx.Client(timeout=60) for _ in range(clients)]

    def run(worker: int) -> None:
        client = pools[worker]
        for i in range(worker, count, clients):
            start = time.perf_counter()
            answer = send(client, i)
            latencies.append((time.perf_counter() - start) * 1000)
            assert answer.is_success, f"{answer.status_code} {answer.text[:200]}"

    for client in pools:  # connections open before the clock starts
        send(client, 0)
    before = cpu_seconds(pid)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    used = cpu_seconds(pid) - before
    for client in pools:
        client.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return used * 1000 / count, statistics.median(latencies), p99


def measure(src: str | None, requests: int, clients: list[int]) -> dict[tuple[str, int], tuple]:
    work = Path(tempfile.mkdtemp(prefix="imagesmith-api-"))
    server = Server(work / "srv", work / "models")
    if src:
        server.env["PYTHONPATH"] = str(Path(src).resolve())
    server.start("--no-worker")
    try:
        key = create_key(server.env, "bench", "api")
        url = server.url
        auth = {"X-API-Key": key}
        body = {"prompt": "a red circle", "autoEnhance": False}
        with httpx.Client(base_url=url, headers=auth) as api:
            pending = api.post("/api/v1/generations", json=body).json()["data"]["id"]
            done = api.post("/api/v1/generations", json=body).json()["data"]["id"]
            api.post(f"/api/v1/generations/{done}/cancel").raise_for_status()
        kinds: dict[str, Callable[[httpx.Client, int], httpx.Response]] = {
            "create": lambda c, i: c.post(f"{url}/api/v1/generations", json=body, headers=auth),
            "get": lambda c, i: c.get(f"{url}/api/v1/generations/{pending}", headers=auth),
            "get, Prefer: wait (ended job)": lambda c, i: c.get(
                f"{url}/api/v1/generations/{done}", headers={**auth, "Prefer": "wait=5"}
            ),
            "list (20)": lambda c, i: c.get(f"{url}/api/v1/generations?limit=20", headers=auth),
            "health": lambda c, i: c.get(f"{url}/health"),
        }
        results = {}
        for n in clients:
            for name, send in kinds.items():
                results[(name, n)] = phase(server.pid, n, requests, send)
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="per request kind and phase")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--src", default="", help="NAME=PATH,… of src folders to compare")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    variants = [v.split("=", 1) for v in args.src.split(",")] if args.src else [["this", ""]]
    runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
    order = variants + variants[::-1] if len(variants) > 1 else variants
    for name, src in order:
        print(f"measuring {name} {src}", flush=True)
        runs[name].append(measure(src or None, args.requests, clients))
    lines = [
        "command: " + " ".join([".venv/bin/python", "bench/bench_api.py", *sys.argv[1:]]),
        "",
        "| request | clients | "
        + " | ".join(f"{n} CPU ms | {n} p50 ms | {n} p99 ms" for n in runs)
        + " |",
        "|---|---|" + "---|---|---|" * len(runs),
    ]
    for key in runs[variants[0][0]][0]:
        cells = []
        for name in runs:
            got = [run[key] for run in runs[name]]
            cells += [f"{statistics.median(g[i] for g in got):.2f}" for i in range(3)]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        with args.out.open("a") as out:
            out.write("\n".join(["", *lines, ""]))


if __name__ == "__main__":
    main()
