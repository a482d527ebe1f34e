"""(a)'s scenario side by side: one client creates N jobs one after another, then waits for each,
on a batch-size-1 server (tiny-sd, one torch thread); what a job costs beyond its pipeline call,
and how often the model child sat idle because the next job reached it late.

    .venv/bin/python bench/bench_sequential.py [--size 64] [--steps 4] [--jobs 48] [--rounds 2]
        [--src old=/tmp/old/src,new=src]   # other checkouts' `src` folders, alternating

Per run: wall per job (first create to last success), the mean pipeline call, the child's idle
time per job (`idle_ms`: it had nothing to run, after the first job), and the batches that
arrived after the one before had ended. 127.0.0.1 only."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, create_key  # noqa: E402


def run(src: str | None, work: Path, size: int, steps: int, jobs: int) -> dict[str, float]:
    srv = Server(
        work, work.parent / "models", worker_batch_size=1, lease_seconds=60, torch_threads=1
    )
    if src:
        srv.env["PYTHONPATH"] = str(Path(src).resolve())
    srv.start()
    try:
        key = create_key(srv.env, "bench", "sequential")
        body = {"prompt": "bench", "autoEnhance": False, "steps": steps}
        body.update(width=size, height=size)
        with srv.client(key) as api:
            warm = api.post("/api/v1/generations", headers={"Prefer": "wait=120"}, json=body)
            assert warm.json()["data"]["status"] == "success", warm.text
            start = time.perf_counter()
            ids = [
                api.post("/api/v1/generations", json=body).json()["data"]["id"] for _ in range(jobs)
            ]
            for generation_id in ids:
                api.get(f"/api/v1/generations/{generation_id}", headers={"Prefer": "wait=120"})
            elapsed = time.perf_counter() - start
        done = [line for line in srv.log().splitlines() if "batch.done" in line][1:]
    finally:
        srv.stop()

    def values(name: str) -> list[float]:
        return [float(v) for line in done for v in re.findall(rf"{name}=([0-9.]+)", line)]

    idle = values("idle_ms")[1:]  # the first job waited for the client, not for a claim
    return {
        "wall": elapsed * 1000 / jobs,
        "pipeline": statistics.mean(values("pipeline_ms")),
        "idle": sum(idle) / jobs,
        "late": sum(1 for ms in idle if ms > 1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--src", default="", help="NAME=PATH,… of src folders to compare")
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in args.src.split(",")] if args.src else [["this", ""]]
    work = Path(tempfile.mkdtemp(prefix="imagesmith-seq-"))
    rows = [
        f"command: .venv/bin/python bench/bench_sequential.py {' '.join(sys.argv[1:])}",
        "",
        f"| round | code | ms a job | pipeline call, mean | wall - pipeline | child idle a job "
        f"| late batches of {args.jobs} |",
        "|---|---|---|---|---|---|---|",
    ]
    for round_ in range(args.rounds):
        for name, src in variants if round_ % 2 == 0 else variants[::-1]:
            got = run(src or None, work / f"{name}-{round_}", args.size, args.steps, args.jobs)
            rows.append(
                f"| {round_ + 1} | {name} | {got['wall']:.1f} | {got['pipeline']:.1f} | "
                f"{got['wall'] - got['pipeline']:.1f} | {got['idle']:.2f} | {got['late']:.0f} |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
