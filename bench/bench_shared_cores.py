"""What another process's CPU use costs the model when torch has every core: the raw diffusers
loop beside a process that is busy `d` ms of every 10 ms, for several `d`.

    .venv/bin/python bench/bench_shared_cores.py [--duties 0,1,2,4] [--threads 2] [--size 256]
        [--steps 4] [--batch 4] [--repeats 5]

torch splits each operator evenly among its threads and waits for the slowest; a thread whose
core is taken by another process for a moment holds up all of them. So on a machine where the
API shares the model's cores, a fraction f of one core used by the API can slow the pipeline
call by about f, not f / cores. This is what separates a server's images/s from the raw loop's
on this 2-core VM (bench/RESULTS.md, twelfth session), and why the API's CPU per picture is
worth cutting even where it looks small. Not a test: the numbers depend on the machine."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path


def burn(stop: mp.synchronize.Event, busy_ms: float) -> None:
    """Busy for `busy_ms` of every 10 ms, like an API answering a steady trickle of requests."""
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < busy_ms / 1000:
            pass
        time.sleep((10 - busy_ms) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duties", default="0,1,2,4", help="busy ms of every 10, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the model's)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="calls per duty (median)")
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    from imagesmith.engines.tiny import ensure_tiny_sd

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="shared-cores-") as scratch:
        folder = ensure_tiny_sd(Path(scratch) / "tiny-sd")
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def call() -> float:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(args.batch)]
        start = time.perf_counter()
        pipe(
            ["a red circle on a blue background"] * args.batch,
            width=args.size,
            height=args.size,
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            generator=generators,
        )
        return (time.perf_counter() - start) * 1000

    call()  # warm-up
    print(
        f"tiny-sd {args.size} px, {args.steps} steps, batch {args.batch}, torch threads "
        f"{args.threads}, median of {args.repeats} calls:\n"
        "| the other process's use of one core | pipeline call ms | slowdown |\n|---|---|---|",
        flush=True,
    )
    base = None
    for duty in (float(d) for d in args.duties.split(",")):
        stop = mp.Event()
        burner = mp.Process(target=burn, args=(stop, duty), daemon=True) if duty else None
        if burner is not None:
            burner.start()
            time.sleep(0.2)
        try:
            ms = statistics.median(call() for _ in range(args.repeats))
        finally:
            stop.set()
            if burner is not None:
                burner.join(5)
        base = base or ms
        print(f"| {duty * 10:.0f} % | {ms:.0f} | {ms / base - 1:+.0%} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
