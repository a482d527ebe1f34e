"""What turning a batch's decoded pixels into images costs the thread that denoises.

    .venv/bin/python bench/bench_postprocess.py [--sizes 512,1024] [--batch 4] [--threads 1,2]
        [--device cpu]

diffusers' `output_type="pil"` copies the float pixels to the CPU and scales and rounds them
with numpy there; the engine (`diffusers_engine.to_images`) makes them 8-bit where they lie and
copies only the bytes. On a GPU box the CPU part is what waits between two batches: with
`--device cpu` (no GPU here) this prints the CPU part of each path, given what each path copies
off the device (float16 for diffusers, uint8 for ours). With `--device cuda` it times both paths
whole, from the device tensor. Checks that both give the same pixels. Not a test."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def median_ms(work: Callable[[], Any], repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(decoded: Any, on_cpu: bool) -> tuple[float, float, bool]:
    """(diffusers' pil path ms, ours ms, same pixels) for one decoded batch in [-1, 1]."""
    import numpy as np
    import torch
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    from imagesmith.engines.diffusers_engine import to_images

    processor = VaeImageProcessor()
    # Both paths denormalize on the device first (postprocess's "pt" step).
    pixels = processor.postprocess(decoded, output_type="pt")

    def theirs() -> list[Image.Image]:
        return list(processor.postprocess(decoded, output_type="pil"))

    def ours() -> list[Image.Image]:
        return to_images(pixels)

    if on_cpu:
        # What lands on the CPU: float16 for diffusers' path, uint8 for ours.
        copied = pixels.half()
        made = (pixels.float() * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

        def theirs_cpu() -> list[Image.Image]:
            return list(processor.numpy_to_pil(processor.pt_to_numpy(copied)))

        def ours_cpu() -> list[Image.Image]:
            return [Image.fromarray(row) for row in made.numpy()]

        timed = (median_ms(theirs_cpu), median_ms(ours_cpu))
    else:
        timed = (median_ms(theirs), median_ms(ours))
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(theirs(), ours(), strict=True)
    )
    return timed[0], timed[1], same


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    on_cpu = args.device == "cpu"
    print(
        f"| torch threads | size | batch | diffusers pil, ms | ours, ms | "
        f"({'CPU part after the copy' if on_cpu else 'whole, from the device'}) |"
    )
    print("|---|---|---|---|---|---|")
    for threads in (int(n) for n in args.threads.split(",")):
        torch.set_num_threads(threads)
        for size in (int(n) for n in args.sizes.split(",")):
            decoded = torch.rand(args.batch, 3, size, size, device=args.device) * 2 - 1
            theirs, ours, same = measure(decoded if on_cpu else decoded.half(), on_cpu)
            print(
                f"| {threads} | {size} | {args.batch} | {theirs:.1f} | {ours:.1f} | "
                f"{'same pixels' if same else 'PIXELS DIFFER'} |"
            )


if __name__ == "__main__":
    main()
