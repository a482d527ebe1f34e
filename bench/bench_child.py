"""The model child alone: how much of its wall time is the pipeline call, with batches queued.

    .venv/bin/python bench/bench_child.py [--size 512] [--steps 2] [--batch 4] [--batches 8]
        [--src old=/tmp/old/src,new=src]

Runs the child's own loop (`worker/child.py`'s `serve`) in a fresh process per source tree,
with the real tiny-sd pipeline, `--batches` batches of `--batch` compatible jobs sent at once
(as the worker keeps the next batch queued in the child), and prints the wall time from the
first send to the last BatchDone against the sum of the pipeline calls: what is left is the
child's own cost between denoising calls (setup, PNG encoding where it is on that path, the
pipe). On a GPU, where a turbo model draws a 1024 px image in tens of milliseconds and one
thread needs ~100 ms to encode its PNG (this VM), that share decides images/s. Not a test."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, threading, time
from multiprocessing import Pipe
from pathlib import Path
import torch
from imagesmith.catalog.models import ModelRegistry
from imagesmith.catalog.params import EngineParams
from imagesmith.engines.base import EngineConfig, EngineJob
from imagesmith.engines.diffusers_engine import DiffusersEngine
from imagesmith.engines.tiny import ensure_tiny_sd
from imagesmith.worker.child import serve
from imagesmith.worker.messages import BatchDone, JobDone, Ready, RunBatch, Shutdown

models, size, steps, batch, batches, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
ensure_tiny_sd(Path(models) / "tiny-sd")
tiny = ModelRegistry.load().get("tiny-sd")
engine = DiffusersEngine(EngineConfig(models, "cpu", False, [tiny.to_dict()]))
ours, theirs = Pipe()
threading.Thread(target=serve, args=(theirs, engine), daemon=True).start()
assert isinstance(ours.recv(), Ready)

def run(count, tag):
    start = time.perf_counter()
    for b in range(count):
        jobs = [EngineJob(f"{tag}{b}-{j}", "a red circle", None,
                          EngineParams("tiny-sd", size, size, steps, 7.5, "K_EULER", b * 100 + j))
                for j in range(batch)]
        ours.send(RunBatch(f"{tag}{b}", jobs))
    done, pipeline, encode, images = 0, 0.0, 0.0, 0
    while done < count:
        message = ours.recv()
        if isinstance(message, JobDone):
            images += len(message.images)
        if isinstance(message, BatchDone):
            done += 1
            pipeline += message.timings.get("pipeline_ms", 0.0)
            encode += message.timings.get("encode_ms", 0.0)
    wall = (time.perf_counter() - start) * 1000
    assert images == count * batch, images
    return wall, pipeline, encode

run(1, "warm")
wall, pipeline, encode = run(batches, "b")
ours.send(Shutdown())
print(json.dumps({"wall_ms": wall, "pipeline_ms": pipeline, "encode_ms": encode,
                  "images": batches * batch}))
"""


def measure(src: str, models: str, args: argparse.Namespace) -> dict[str, float]:
    spec = [models, args.size, args.steps, args.batch, args.batches, args.threads]
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the child")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--src", default=f"this={ROOT / 'src'}", help="name=path,… (PYTHONPATH)")
    args = parser.parse_args()
    sources = [tuple(item.split("=", 1)) for item in args.src.split(",")]
    with tempfile.TemporaryDirectory() as models:
        rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sources}
        for _ in range(args.repeats):  # interleaved, so drift hits every tree alike
            for name, src in sources:
                rows[name].append(measure(src, models, args))
    print(
        f"child, tiny-sd {args.size} px, {args.steps} steps, {args.batches} batches of "
        f"{args.batch} queued at once, torch threads {args.threads}, median of {args.repeats}:"
    )
    print("| code | img/s | wall ms | pipeline ms | wall - pipeline a batch | encode a batch |")
    print("|---|---|---|---|---|---|")
    for name, runs in rows.items():
        wall = statistics.median(r["wall_ms"] for r in runs)
        pipeline = statistics.median(r["pipeline_ms"] for r in runs)
        encode = statistics.median(r["encode_ms"] for r in runs)
        images = runs[0]["images"]
        print(
            f"| {name} | {images / wall * 1000:.2f} | {wall:.0f} | {pipeline:.0f} | "
            f"{(wall - pipeline) / args.batches:.1f} | {encode / args.batches:.1f} |"
        )


if __name__ == "__main__":
    main()
