"""Start aquiles-image 0.8.3 on the CPU, for bench/bench_peer.py. Runs in aquiles' own venv:

    AQUILES_VENV/bin/python bench/aquiles_cpu_launcher.py [--gc off] serve --model FOLDER ...

As shipped, aquiles loads a model only on CUDA (otherwise its pipeline stays None and every
request fails) and seeds each image's torch.Generator on "cuda" or else "mps". Two patches,
applied in this process before aquiles' own CLI runs, make it serve here; nothing in
site-packages is edited:

- `AutoPipelineDiffusers.start` loads the folder with `AutoPipelineForText2Image` in fp32 on the
  CPU, then calls aquiles' own `optimization()` (channels-last, fused QKV), as its CUDA path does.
- `ModelPipelineInit` gets the device string "cpu".

`--gc off` adds a third patch, a diagnostic and not aquiles as shipped: it removes the
`gc.collect()` that aquiles runs on the event-loop thread after every request."""

from __future__ import annotations

import sys
from typing import Any


def patch_cpu_loading() -> None:
    import torch
    from aquilesimage.pipelines import ModelPipelineInit
    from aquilesimage.pipelines.image.auto import text2img
    from diffusers import AutoPipelineForText2Image

    def start_on_cpu(self: Any) -> None:
        self.pipeline = AutoPipelineForText2Image.from_pretrained(
            self.model_name, local_files_only=True, dtype=torch.float32
        ).to("cpu")
        if self.load_lora:
            text2img.loadLoRA(self.pipeline, self.conf_lora)
        self.optimization()

    text2img.AutoPipelineDiffusers.start = start_on_cpu

    shipped_init = ModelPipelineInit.__init__

    def init_on_cpu(self: Any, *args: Any, **kwargs: Any) -> None:
        shipped_init(self, *args, **kwargs)
        # Seeds every image's torch.Generator; as shipped it is "cuda" or else "mps".
        self.device = "cpu"

    ModelPipelineInit.__init__ = init_on_cpu  # type: ignore[method-assign]


def patch_gc_off() -> None:
    """Diagnostic: no `gc.collect()` after each request. aquiles imports its app (which loads the
    model) inside `serve`, just before `uvicorn.run`, so the patch is applied there."""
    import uvicorn

    shipped_run = uvicorn.run

    def run(app: Any, **kwargs: Any) -> None:
        import aquilesimage.main

        aquilesimage.main._cleanup_gpu = lambda: None
        print("aquiles_cpu_launcher: per-request gc.collect() is OFF (diagnostic)", flush=True)
        shipped_run(app, **kwargs)

    uvicorn.run = run


def main(argv: list[str]) -> None:
    gc_off = False
    if argv[:2] == ["--gc", "off"]:
        gc_off, argv = True, argv[2:]
    elif argv[:2] == ["--gc", "on"]:
        argv = argv[2:]
    patch_cpu_loading()
    if gc_off:
        patch_gc_off()
    from aquilesimage.cli import cli

    sys.argv = ["aquiles-image", *argv]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
