"""Raw speed of the shipped demo model: one diffusers call at the catalog's default settings
(steps, guidance, scheduler) at 64x64 and at the 16:9 size, for batches of 1 and 8 (the mean of
3 calls after a warm-up), on the torch threads given (default: torch's own choice).

    .venv/bin/python bench/bench_demo.py [--threads N] [--steps N]
"""

from __future__ import annotations

import argparse
import time

import torch

from imagesmith.catalog.models import ModelRegistry
from imagesmith.demo.evaluate import load_pipeline
from imagesmith.engines.schedulers import fresh_scheduler
from imagesmith.engines.tiny import DEMO_FOLDER


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = ModelRegistry.load().get("demo")
    steps = args.steps or spec.default_steps
    pipe = load_pipeline(DEMO_FOLDER)
    pipe.scheduler = fresh_scheduler(pipe.scheduler, spec.default_scheduler)
    prompt = "a red circle on a blue background"
    print(
        f"demo: {steps} steps, {spec.default_scheduler}, guidance {spec.default_guidance:g}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for width, height in ((64, 64), (112, 64)):
        for batch in (1, 8):
            settings = {
                "height": height,
                "width": width,
                "num_inference_steps": steps,
                "guidance_scale": spec.default_guidance,
            }
            pipe([prompt] * batch, **settings)
            start = time.perf_counter()
            for _ in range(3):
                pipe([prompt] * batch, **settings)
            seconds = (time.perf_counter() - start) / 3
            print(
                f"{width}x{height} batch {batch}: {seconds:.3f} s per call, "
                f"{seconds / batch:.3f} s a picture, {batch / seconds:.1f} pictures/s"
            )


if __name__ == "__main__":
    main()
