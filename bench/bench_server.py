"""Throughput and latency of the server against the raw diffusers loop, on tiny-sd.

    .venv/bin/python bench/bench_server.py [--jobs 16] [--threads 1] [--parallel] [--repeats 3]
        [--out bench/RESULTS.md]

(a) raw pipeline loop vs server end to end (submit → success), batch size 1, images/s;
(b) 16 compatible jobs queued on a batch-size-16 server vs the raw unbatched loop;
(c) p50/p99 of GET /api/v1/generations/:id with the worker idle vs saturated.
Not a test: numbers depend on the machine. Results go to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, create_key  # noqa: E402

SIZES = [(64, 4), (64, 10), (128, 4), (128, 10)]
# What the worker logs per batch: claim (with the requeue sweep), waiting in the child's queue,
# setup before the pipeline call, the call itself, PNG encoding, and storing the results. (The
# child's `idle_ms`, time lost to a claim that came late, is bench_sequential.py's: its median
# is 0, and the first job after each warm-up waits for the client.)
PARTS = ("claim_ms", "queued_ms", "prepare_ms", "pipeline_ms", "encode_ms", "store_ms")


def raw_loop(
    models_dir: Path, size: int, steps: int, count: int, threads: int | None, batch: int = 1
) -> float:
    """Images/s of a plain diffusers loop, `batch` prompts a call (one warm-up call first)."""
    code = f"""
import time, torch
if {threads!r} is not None:
    torch.set_num_threads({threads!r})
from diffusers import StableDiffusionPipeline
from imagesmith.engines.tiny import ensure_tiny_sd
from pathlib import Path
folder = ensure_tiny_sd(Path({str(models_dir / "tiny-sd")!r}))
pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
pipe.set_progress_bar_config(disable=True)
run = lambda seed: pipe(["bench"] * {batch}, width={size}, height={size},
                        num_inference_steps={steps},
                        generator=[torch.Generator("cpu").manual_seed(seed + i)
                                   for i in range({batch})]).images
run(0)
start = time.perf_counter()
for i in range({count} // {batch}):
    run(1000 * (i + 1))
print({count} // {batch} * {batch} / (time.perf_counter() - start))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    return float(out.stdout.strip().splitlines()[-1])


def server_throughput(
    server: Server, key: str, size: int, steps: int, count: int, parallel: bool = False
) -> float:
    """Images/s from the first submit to the last success. The jobs are submitted one after
    another by one client, or with `parallel` at once by `count` clients (what a batch of
    compatible jobs looks like when many clients use the server)."""
    with server.client(key) as api:
        # The size is sent explicitly (before 2026-12-01 it was not, so the "128 px" server
        # rows ran at the model's default 64 px: those older figures are not comparable).
        body = {
            "prompt": "bench",
            "autoEnhance": False,
            "steps": steps,
            "width": size,
            "height": size,
        }
        warm = api.post("/api/v1/generations", headers={"Prefer": "wait=60"}, json=body)
        assert warm.json()["data"]["status"] == "success", warm.text
        assert warm.json()["data"]["outputImage"]["width"] == size, warm.text
        # One client for the parallel creates, built before the clock starts: an httpx.Client
        # loads the CA bundle (~22 ms of CPU here), and one per create spent up to 1.4 s of
        # this 2-core machine beside the server (found 2026-12-06; no recorded (b) used it).
        many = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        shared = httpx.Client(
            base_url=server.url, headers={"X-API-Key": key}, timeout=60, limits=many
        )
        start = time.perf_counter()
        if parallel:
            with ThreadPoolExecutor(count) as pool:
                made = list(pool.map(lambda _: create(shared, body), range(count)))
            ids = [response["data"]["id"] for response in made]
        else:
            ids = [create(api, body)["data"]["id"] for _ in range(count)]
        for generation_id in ids:
            api.get(f"/api/v1/generations/{generation_id}", headers={"Prefer": "wait=120"})
        elapsed = time.perf_counter() - start
        shared.close()
    return count / elapsed


def create(api: httpx.Client, body: dict[str, object]) -> dict[str, Any]:
    response = api.post("/api/v1/generations", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


TIMING = re.compile(r"(\w+_ms)=([0-9.]+)")
BATCH_JOBS = re.compile(r"batch\.done .*?jobs=(\d+)")


def batch_sizes(log: str) -> list[int]:
    """The jobs of each batch the worker ran, in order, without the warm-up batch."""
    return [int(jobs) for jobs in BATCH_JOBS.findall(log)][1:]


def breakdown(log: str) -> dict[str, float]:
    """Median milliseconds per batch of each part the worker logs (batch.done, batch.stored),
    skipping the warm-up batch."""
    parts: dict[str, list[float]] = {}
    done = [line for line in log.splitlines() if "batch.done" in line][1:]
    stored = [line for line in log.splitlines() if "batch.stored" in line][1:]
    for line in done + stored:
        for name, value in TIMING.findall(line):
            parts.setdefault(name, []).append(float(value))
    return {name: statistics.median(values) for name, values in parts.items()}


def latency(
    server: Server, key: str, generation_id: str, samples: int = 200
) -> tuple[float, float, float]:
    """p50, p99 and max of `samples` GETs of a generation, ms (bench_busy_get.py uses it too)."""
    times = []
    with server.client(key) as api:
        for _ in range(samples):
            start = time.perf_counter()
            api.get(f"/api/v1/generations/{generation_id}")
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], times[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--out", type=Path, help="Write the report (Markdown) here too")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the raw loop and the server's model child "
        "(IMAGESMITH_TORCH_THREADS); default: torch's own",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(f"{size}x{steps}" for size, steps in SIZES),
        help="PIXELSxSTEPS pairs, comma-separated (default: the issue's four)",
    )
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="(b): the jobs are created at once by --jobs clients, not one after another",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure each (a) and (b) this many times, the raw loop and the server "
        "alternating (one server per size and batch), and report medians: on a noisy machine "
        "one run's ratio swings by 0.2-0.4",
    )
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in pair.split("x")) for pair in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="imagesmith-bench-"))
    models = work / "models"
    lines: list[str] = []
    costs: list[str] = []
    batches: list[str] = []
    for size, steps in sizes:
        raws: list[float] = []
        # What batching gains in diffusers itself: the most the server's (b) could reach.
        raw_batched = raw_loop(models, size, steps, args.jobs, args.threads, batch=args.jobs)
        results = {}
        ratios: dict[int, list[float]] = {1: [], 16: []}
        for batch in (1, 16):
            srv = Server(
                work / f"srv-{size}-{steps}-{batch}",
                models,
                worker_batch_size=batch,
                lease_seconds=60,
                **({"torch_threads": args.threads} if args.threads else {}),
            )
            srv.start()
            try:
                key = create_key(srv.env, "bench", "run")
                rates = []
                for repeat in range(args.repeats):
                    if batch == 1:  # the raw loop, alternating with the server
                        raws.append(raw_loop(models, size, steps, args.jobs, args.threads))
                    rates.append(
                        server_throughput(
                            srv, key, size, steps, args.jobs, parallel=args.parallel and batch > 1
                        )
                    )
                    ratios[batch].append(rates[-1] / raws[repeat])
                results[batch] = statistics.median(rates)
                if batch > 1:
                    batches.append(f"{size} px / {steps} steps: {batch_sizes(srv.log())}")
                if batch == 1:
                    parts = breakdown(srv.log())
                    per_job = 1000 / results[1]
                    costs.append(
                        f"| {size} px | {steps} | {per_job:.1f} | "
                        + " | ".join(f"{parts.get(name, float('nan')):.1f}" for name in PARTS)
                        + f" | {per_job - parts.get('pipeline_ms', 0):.1f} |"
                    )
                if batch == 1 and (size, steps) == (64, 10):
                    with srv.client(key) as api:
                        probe = api.post(
                            "/api/v1/generations",
                            headers={"Prefer": "wait=60"},
                            json={"prompt": "probe", "autoEnhance": False},
                        ).json()
                    probe_id = probe["data"]["id"]
                    idle = latency(srv, key, probe_id)
                    with srv.client(key) as api:
                        for _ in range(60):
                            api.post(
                                "/api/v1/generations",
                                json={"prompt": "load", "autoEnhance": False, "steps": steps},
                            )
                    busy = latency(srv, key, probe_id)
                    lines.append(
                        f"(c) GET /api/v1/generations/:id latency, 64 px / 10 steps worker: idle "
                        f"p50 {idle[0]:.1f} ms p99 {idle[1]:.1f} ms; "
                        f"saturated p50 {busy[0]:.1f} ms "
                        f"p99 {busy[1]:.1f} ms (p99 ratio {busy[1] / idle[1]:.2f})"
                    )
            finally:
                srv.stop()
        raw = statistics.median(raws)
        spread = (
            f" ({min(ratios[1]):.2f}-{max(ratios[1]):.2f}; {min(ratios[16]):.2f}-"
            f"{max(ratios[16]):.2f})"
            if args.repeats > 1
            else ""
        )
        lines.insert(
            len(lines),
            f"| {size} px | {steps} | {raw:.2f} | {results[1]:.2f} | "
            f"{statistics.median(ratios[1]):.2f} | {results[16]:.2f} | "
            f"{statistics.median(ratios[16]):.2f} | {raw_batched:.2f} | "
            f"{raw_batched / raw:.2f} |{spread}",
        )
        print(lines[-1], flush=True)
    how = "at once" if args.parallel else "one after another"
    table = [line for line in lines if line.startswith("|")]
    notes = [line for line in lines if not line.startswith("|")]
    report = [
        "# Benchmark results",
        "",
        f"Command: `.venv/bin/python bench/bench_server.py {' '.join(sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, no GPU, tiny-sd, CPU fp32)."
        + (
            f" Medians of {args.repeats} runs, the raw loop and the server alternating; each "
            "ratio is the median of the runs' ratios (their range after the row)."
            if args.repeats > 1
            else ""
        ),
        "",
        "| size | steps | raw loop img/s | server b=1 img/s | (a) ratio | server b=16 img/s "
        f"| (b) ratio | raw b={args.jobs} img/s | raw b={args.jobs} / raw b=1 (ceiling of (b)) |",
        "|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        *notes,
        "",
        "Per job at batch size 1, milliseconds (medians of the worker's `batch.done` and "
        "`batch.stored` lines; claim and store overlap other work, so they are not all on the "
        "critical path; wall = 1000 / server img/s):",
        "",
        "| size | steps | wall | " + " | ".join(PARTS) + " | wall - pipeline |",
        "|---|---|---|" + "---|" * len(PARTS) + "---|",
        *costs,
        "",
        f"Jobs per batch in the b=16 runs (created {how}):",
        "",
        *(f"* {line}" for line in batches),
        "",
    ]
    if args.out:
        args.out.write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
