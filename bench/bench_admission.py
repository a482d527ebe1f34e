"""Head-of-line wait: what a job that arrives while a batch denoises waits, and what joining the
running batch at the next step (step-level admission) could save — measured, not assumed.

    .venv/bin/python bench/bench_admission.py [--steps 50] [--size 128] [--batch 4] [--repeats 3]

For each repeat: one job, then `batch` compatible jobs are queued on a server whose worker
batches up to `batch` jobs (they are claimed together while the first runs); when the running
batch is half way (progress step >= steps/2; progress is written every 0.5 s), one more
compatible job X arrives. X waits for the whole batch (arrival -> its own start), then runs
alone (a batch of one). Step-level admission would start X at the running batch's next step
instead, and X would then run its steps at the batch's pace. Printed: X's head-of-line wait, one
step of the running batch, X's own run, the batch's run, and the batch fill of a saturated
queue (jobs per batch from the worker's `batch.done` lines). Not a test."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, create_key  # noqa: E402


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one_repeat(api: httpx.Client, body: dict[str, Any], batch: int, steps: int) -> dict[str, float]:
    # One job first, alone: the `batch` jobs queue behind it and are claimed together.
    api.post("/api/v1/generations", json=body)
    ids = [api.post("/api/v1/generations", json=body).json()["data"]["id"] for _ in range(batch)]
    while True:  # wait until the batch is half way (progress is written every 0.5 s)
        data = api.get(f"/api/v1/generations/{ids[0]}").json()["data"]
        progress = data.get("progress") or {}
        if data["status"] == "processing" and progress.get("step", 0) >= steps // 2:
            break
        if data["status"] in ("success", "failed"):
            raise SystemExit("the batch ended before it was half way: raise --steps")
        time.sleep(0.02)
    late = api.post("/api/v1/generations", json=body).json()["data"]["id"]
    records = [
        api.get(f"/api/v1/generations/{gid}", headers={"Prefer": "wait=300"}).json()["data"]
        for gid in [*ids, late]
    ]
    first, x = records[0], records[-1]
    batch_run = seconds(first["completedAt"]) - seconds(first["startedAt"])
    return {
        "hol_wait_s": seconds(x["startedAt"]) - seconds(x["createdAt"]),
        "step_s": batch_run / steps,
        "x_run_s": seconds(x["completedAt"]) - seconds(x["startedAt"]),
        "batch_run_s": batch_run,
    }


def saturated_fill(server: Server, api: httpx.Client, body: dict[str, Any], jobs: int) -> float:
    before = server.log().count("batch.done")
    ids = [api.post("/api/v1/generations", json=body).json()["data"]["id"] for _ in range(jobs)]
    for gid in ids:
        api.get(f"/api/v1/generations/{gid}", headers={"Prefer": "wait=300"})
    time.sleep(0.5)
    lines = [line for line in server.log().splitlines() if "batch.done" in line][before:]
    sizes = [int(m.group(1)) for line in lines if (m := re.search(r" jobs=(\d+)", line))]
    return sum(sizes) / len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagesmith-admission-"))
    server = Server(work / "srv", work / "models", worker_batch_size=args.batch, lease_seconds=120)
    server.start()
    try:
        key = create_key(server.env, "bench", "admission")
        body = {
            "prompt": "bench",
            "autoEnhance": False,
            "steps": args.steps,
            "width": args.size,
            "height": args.size,
            "seed": 1,
        }
        with server.client(key) as api:
            api.post("/api/v1/generations", json=body, headers={"Prefer": "wait=120"})  # warm
            runs = [one_repeat(api, body, args.batch, args.steps) for _ in range(args.repeats)]
            fill = saturated_fill(server, api, body, 8 * args.batch)
    finally:
        server.stop()
    med = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    command = " ".join(["bench/bench_admission.py", *sys.argv[1:]])
    print(
        f"`{command}` — tiny-sd {args.size} px, {args.steps} steps, batch {args.batch}, "
        f"median of {args.repeats}"
    )
    print()
    print("| X arrives mid-batch | seconds |")
    print("|---|---|")
    print(f"| head-of-line wait (arrival → start) | {med['hol_wait_s']:.2f} |")
    print(f"| with step-level admission (≤ one step of the batch) | {med['step_s']:.3f} |")
    print(f"| X's own run (alone) | {med['x_run_s']:.2f} |")
    print(f"| the running batch, start → end | {med['batch_run_s']:.2f} |")
    hol_share = med["hol_wait_s"] / (med["hol_wait_s"] + med["x_run_s"])
    print(
        f"\nHead-of-line wait is {hol_share:.0%} of X's latency; jobs per batch with a "
        f"saturated queue ({8 * args.batch} queued at once): {fill:.2f} of {args.batch}."
    )


if __name__ == "__main__":
    main()
