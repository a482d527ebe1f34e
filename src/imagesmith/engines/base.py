"""The engine protocol the model child drives, with the engine's own job and result types
(engines never import the worker). Implementations import torch; this file does not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imagesmith.catalog.params import EngineParams

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class EngineConfig:
    models_dir: str
    device: str
    allow_downloads: bool
    models: list[dict[str, Any]] = field(default_factory=list)  # ModelSpec dicts
    model_cache_gb: float = 12.0
    # Speed settings (see Settings for what each value means; "auto" is resolved per device).
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    attention: str = "auto"  # auto | sdpa | default
    channels_last: str = "auto"  # auto | on | off
    compile: bool = False
    compile_mode: str = "default"
    compile_warmup: tuple[tuple[int, int, int], ...] = ()  # (batch, width, height) buckets
    compile_warmup_auto: int = 0  # else batches 1..this at each model's default size
    compile_max_graphs: int = 8  # buckets compiled per model; others run uncompiled
    threads: int | None = None  # torch's intra-op threads in the child; None: pick_threads
    adaptive_threads: bool = False  # CPU, threads unset: chosen per batch (cpu_share.py)
    png_compress_level: int = 1


@dataclass(frozen=True)
class EngineJob:
    job_id: str
    prompt: str
    negative_prompt: str | None
    params: EngineParams
    init_image: bytes | None = None  # img2img: the encoded init image


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine and may not be fetched: fail, never hang."""


def out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), MPS's "MPS backend out of memory", CPU allocators."""
    return "out of memory" in str(exc).lower()


OnPreview = Callable[[str, int, "Image"], None]
"""(job id, preview index, image): a partial image decoded from the latents mid-run."""


class GenerationEngine(Protocol):
    def generate(
        self,
        jobs: list[EngineJob],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
        on_preview: OnPreview | None = None,
    ) -> list[list[Image]]:
        """Run jobs that share a batch key in one call; per job its `num_outputs` images, and
        for a job with `params.previews` its partial images at `params.preview_steps()`. The
        images come back unencoded: the model child encodes them while the next batch runs."""
        ...
