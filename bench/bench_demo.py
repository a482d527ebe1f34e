"""Raw speed of the shipped demo model: one diffusers call of 20 DDIM steps at 64x64, guidance 5,
for batches of 1 and 8 (the mean of 3 calls after a warm-up).

    .venv/bin/python bench/bench_demo.py
"""

from __future__ import annotations

import time

import torch

from imagesmith.demo.evaluate import load_pipeline
from imagesmith.engines.tiny import DEMO_FOLDER


def main() -> None:
    pipe = load_pipeline(DEMO_FOLDER)
    prompt = "a red circle on a blue background"
    for batch in (1, 8):
        settings = {"height": 64, "width": 64, "num_inference_steps": 20, "guidance_scale": 5.0}
        pipe([prompt] * batch, **settings)
        start = time.perf_counter()
        for _ in range(3):
            pipe([prompt] * batch, **settings)
        seconds = (time.perf_counter() - start) / 3
        print(f"batch {batch}: {seconds:.3f} s per call, {batch / seconds:.1f} images/s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
