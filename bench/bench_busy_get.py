"""(c) with more samples: a GET's latency with the embedded worker idle, then saturated.

    .venv/bin/python bench/bench_busy_get.py [--samples 800] [--queued 250] [--steps 10]
        [--src old=/tmp/old/src,new=src] [--rounds 2]

A server with an embedded worker (batch size 1, one torch thread, tiny-sd at 64 px) finishes
one job; one client GETs it `--samples` times, idle; then `--queued` jobs are created and the
same GETs run while the worker works through them. Prints p50 / p99 / max of each phase and the
ratio of the p99s, per source tree (`--src`, put first on PYTHONPATH: compare code versions
side by side, alternating for `--rounds`). `bench_server.py`'s (c) takes 200 samples, where p99
is the second-worst GET. Not a test."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import latency  # noqa: E402
from tests.serverproc import Server, create_key  # noqa: E402


def probe(work: Path, src: str, args: argparse.Namespace) -> str:
    srv = Server(work, work.parent / "models", worker_batch_size=1, torch_threads=1)
    if src:
        srv.env["PYTHONPATH"] = src
    srv.start()
    try:
        key = create_key(srv.env, "bench", "busy")
        with srv.client(key) as api:
            done = api.post(
                "/api/v1/generations",
                headers={"Prefer": "wait=60"},
                json={"prompt": "probe", "autoEnhance": False},
            ).json()["data"]["id"]
            idle = latency(srv, key, done, args.samples)
            body = {"prompt": "load", "autoEnhance": False, "steps": args.steps}
            for _ in range(args.queued):
                api.post("/api/v1/generations", json=body)
        busy = latency(srv, key, done, args.samples)
    finally:
        srv.stop()
    return (
        f"{idle[0]:.1f} / {idle[1]:.1f} / {idle[2]:.1f} | "
        f"{busy[0]:.1f} / {busy[1]:.1f} / {busy[2]:.1f} | {busy[1] / idle[1]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--queued", type=int, default=250)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--src", default="this=", help="name=path,… (PYTHONPATH; empty: this)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    trees = [pair.split("=", 1) for pair in args.src.split(",")]
    work = Path(tempfile.mkdtemp(prefix="imagesmith-busy-get-"))
    print("| round | code | GET ms idle p50 / p99 / max | saturated p50 / p99 / max | p99 ratio |")
    print("|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        for name, path in trees:
            src = str(Path(path).resolve()) if path else ""
            line = probe(work / f"{name}-{round_}", src, args)
            print(f"| {round_} | {name} | {line} |", flush=True)
    print(f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
