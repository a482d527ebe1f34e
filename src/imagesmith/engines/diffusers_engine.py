"""The diffusers engine: SD 1.x/2.x and SDXL families through `from_pretrained`.

Runs only in the model child. Steps follow diffusers' shape: check inputs → load → per-job
scheduler → generators → denoise (with a step callback) → the images (the model child encodes
them off the denoising path: worker/child.py)."""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
from PIL import Image

from imagesmith.catalog.models import ModelSpec
from imagesmith.engines.base import (
    EngineConfig,
    EngineJob,
    ModelUnavailable,
    OnPreview,
    out_of_memory,
)
from imagesmith.engines.schedulers import fresh_scheduler
from imagesmith.engines.tiny import builtin_folder

log = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Hub weight variants and the dtype they are stored in: a variant loads only when it matches.
VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(requested: str) -> str:
    """cuda > mps > cpu, unless the operator names one."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str, variant: str | None) -> torch.dtype:
    """The operator's dtype; for "auto", float32 on CPU (half precision there is slow and
    partly emulated) and half precision on a GPU: bfloat16 for a model whose hub weights are a
    `bf16` variant (trained and published in it), float16 otherwise (every SD 1.x/2.x/SDXL
    family publishes fp16 weights and runs in them; SDXL's VAE overflow is handled at decode)."""
    if requested != "auto":
        return DTYPES[requested]
    if device == "cpu":
        return torch.float32
    return VARIANT_DTYPES.get(variant or "", torch.float16)


def pick_threads(requested: int | None, device: str, cores: int) -> int | None:
    """torch's intra-op threads in the model child when it starts. The operator's number; else
    on CPU one core fewer than the process may use (at least one), so that the API and the
    supervisor, which run beside the model, keep a core (on the 2-core dev VM this took the load
    benchmark's 1000-client throughput from 0.74 to 0.99 of one client's, bench/RESULTS.md),
    and with IMAGESMITH_ADAPTIVE_THREADS until worker/cpu_share.py picks them per batch. On a
    GPU the CPU threads only feed the device: torch's own default (None)."""
    if requested is not None:
        return requested
    if device == "cpu":
        return max(1, cores - 1)
    return None


class DiffusersEngine:
    def __init__(self, config: EngineConfig):
        self.models_dir = Path(config.models_dir)
        self.allow_downloads = config.allow_downloads
        self.specs = {entry["id"]: ModelSpec(**entry) for entry in config.models}
        self.device = pick_device(config.device)
        self.config = config
        on_cuda = self.device.startswith("cuda")
        # The values were checked once, by Settings (config.py): here they are only read.
        # torch 2's scaled_dot_product_attention is what diffusers picks by default on every
        # device; "auto" states it explicitly so the log says what ran.
        self.attention = "sdpa" if config.attention == "auto" else config.attention
        self.channels_last = config.channels_last == "on" or (
            config.channels_last == "auto" and on_cuda
        )
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        # Per loaded model, a runner per (scheduler, img2img): a pipeline over the model's
        # weights with its own scheduler, built on first use (~1 ms of CPU a batch saved).
        self._runners: dict[tuple[str, str | None, bool], Any] = {}
        self.memory_budget = int(config.model_cache_gb * 1024**3)
        # Milliseconds the last batch spent in each part (for the worker's batch.done line),
        # and on CUDA the peak memory torch has allocated in this process so far.
        self.last_timings: dict[str, float] = {}

    # Load --------------------------------------------------------------------------------

    def pipeline(self, model_id: str) -> Any:
        """The loaded pipeline, loading it first if needed. Loaded models stay in an LRU cache
        within the memory budget; the least recently used ones are dropped to make room."""
        if model_id in self._loaded:
            self._loaded.move_to_end(model_id)
            return self._loaded[model_id]
        spec = self.specs.get(model_id)
        if spec is None:
            raise ModelUnavailable(f"Model '{model_id}' is not in this worker's registry")
        pipe = self._load(spec)
        self._loaded[model_id] = pipe
        self._sizes[model_id] = pipeline_bytes(pipe)
        while len(self._loaded) > 1 and sum(self._sizes.values()) > self.memory_budget:
            self._evict_oldest()
        return pipe

    def _evict_oldest(self) -> None:
        """Drop the least recently used model and give its memory back to the device."""
        evicted = next(iter(self._loaded))
        del self._loaded[evicted]  # no reference kept here: the collection below must free it
        log.info("model.evicted model_id=%s bytes=%d", evicted, self._sizes.pop(evicted))
        for key in [key for key in self._runners if key[0] == evicted]:
            del self._runners[key]  # they hold the weights too
        # A compiled UNet refers to itself (its forward holds its own bound method): only the
        # cycle collector frees it, and the device cache can give back only what is freed.
        gc.collect()
        self.release_cached_memory()

    def _move(self, pipe: Any, model_id: str) -> None:
        """Put a loaded pipeline on the device. Where it does not fit beside the models already
        there, they are dropped (least recently used first) until it does; a model that does
        not fit alone is unavailable on this worker, not a job that asked too much."""
        while True:
            try:
                pipe.to(self.device)
                return
            except Exception as exc:
                if not out_of_memory(exc):
                    raise
                if not self._loaded:
                    reason = str(exc).strip().splitlines()[0][:300]
                    raise ModelUnavailable(
                        f"Model '{model_id}' does not fit in the memory of {self.device} "
                        f"({reason}). Use a device with more memory, or a smaller dtype "
                        "(IMAGESMITH_DTYPE)."
                    ) from None
            log.warning("model.does_not_fit model_id=%s: dropping a loaded model", model_id)
            self._evict_oldest()

    def runner(self, model_id: str, scheduler_id: str | None, img2img: bool) -> Any:
        """The pipeline that runs a batch: the loaded model's weights with the batch's
        scheduler. Built once per (model, scheduler, mode) and reused: a scheduler's per-call
        state (timesteps, step index, a multistep solver's history) is reset by `set_timesteps`
        at the start of every call, and the child runs one batch at a time."""
        pipe = self.pipeline(model_id)
        key = (model_id, scheduler_id, img2img)
        runner = self._runners.get(key)
        if runner is None:
            scheduler = fresh_scheduler(pipe.scheduler, scheduler_id)
            if img2img:
                runner = AutoPipelineForImage2Image.from_pipe(pipe, scheduler=scheduler)
            else:
                runner = pipe.__class__(**pipeline_parts(pipe, scheduler))
            runner.set_progress_bar_config(disable=True)
            self._runners[key] = runner
        return runner

    def release_cached_memory(self) -> None:
        """Give the device allocator's cached blocks back (after an out-of-memory error)."""
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif self.device == "mps":
            torch.mps.empty_cache()

    def _load(self, spec: ModelSpec) -> Any:
        dtype = pick_dtype(self.config.dtype, self.device, spec.variant)
        kwargs: dict[str, Any] = {"torch_dtype": dtype}
        if spec.source.startswith("builtin:"):
            source = str(builtin_folder(spec.source.removeprefix("builtin:"), self.models_dir))
            kwargs["local_files_only"] = True
        elif Path(spec.source).expanduser().is_dir():
            source = str(Path(spec.source).expanduser())
            kwargs["local_files_only"] = True
        else:
            source = spec.source
            kwargs["local_files_only"] = not self.allow_downloads
            kwargs["cache_dir"] = str(self.models_dir / "hub")
            if spec.variant and VARIANT_DTYPES.get(spec.variant) == dtype:
                kwargs["variant"] = spec.variant
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            reason = (
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            )
            if spec.source.startswith("builtin:"):
                remedy = (
                    "Reinstall imagesmith: its weights ship in the package."
                    if spec.source == "builtin:demo"
                    else "Delete that folder; the next job rebuilds it."
                )
                raise ModelUnavailable(
                    f"Built-in model '{spec.id}' could not be loaded from {source}: {reason}. "
                    + remedy
                ) from exc
            raise ModelUnavailable(
                f"Model '{spec.id}' ({spec.source}) could not be loaded: {reason}. "
                f"Get its weights with `imagesmith models pull {spec.id}` on a machine that can "
                "reach the model hub, set IMAGESMITH_ALLOW_DOWNLOADS=true to fetch them on first "
                "use, or point the model at a local folder in IMAGESMITH_MODELS_FILE."
            ) from exc
        self._move(pipe, spec.id)
        pipe.set_progress_bar_config(disable=True)
        self._speed_up(pipe, spec.id)
        log.info(
            "model.loaded model_id=%s device=%s dtype=%s attention=%s channels_last=%s "
            "compile=%s vae_dtype=%s",
            spec.id,
            self.device,
            str(dtype).removeprefix("torch."),
            self.attention,
            "on" if self.channels_last else "off",
            self.config.compile_mode if self.config.compile else "off",
            str(pipe.vae.dtype).removeprefix("torch."),
        )
        if self.config.compile:
            self._warm_up(spec, pipe)
        return pipe

    def _speed_up(self, pipe: Any, model_id: str) -> None:
        """Attention kernel and memory layout for the UNet and VAE, then the optional compile.

        The VAE keeps the pipeline's dtype. In float16, SDXL's VAE overflows: its config says
        `force_upcast`, and diffusers' SDXL pipelines move it to float32 for the decode and back
        (`decode_preview` does the same). We rely on that instead of keeping it in float32,
        since those pipelines cast latents to the VAE's dtype only in that upcast path: a
        float32 VAE with float16 latents fails there. bfloat16 has float32's range: no upcast."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        for module in (pipe.unet, pipe.vae):
            if self.attention == "sdpa":
                module.set_attn_processor(AttnProcessor2_0())
            else:
                module.set_default_attn_processor()
            if self.channels_last:
                module.to(memory_format=torch.channels_last)
        if self.config.compile:
            # An instance attribute: the pipeline's call (and img2img's, which shares the
            # module) goes through it; `pipe.unet` stays the model diffusers knows.
            config = self.config
            pipe.unet.forward = CompiledForward(
                pipe.unet.forward, config.compile_mode, config.compile_max_graphs, model_id
            )

    def _warm_up(self, spec: ModelSpec, pipe: Any) -> None:
        """Compile now, per (batch, width, height) bucket the worker will see, so the first
        jobs do not wait for it. Jobs with classifier-free guidance off (guidance 1) run the
        UNet at half the batch: a bucket of their own, compiled on first use (within
        `compile_max_graphs`, like every bucket). A model with a size of its own
        (`draw_short_side`) is warmed at the size it draws."""
        auto = self.config.compile_warmup_auto
        if auto > self.config.compile_max_graphs:
            log.warning(
                "model.warmup_capped model_id=%s batches=1-%d max_graphs=%d (raise "
                "IMAGESMITH_COMPILE_MAX_GRAPHS to compile them all)",
                spec.id,
                auto,
                self.config.compile_max_graphs,
            )
        buckets = self.config.compile_warmup or tuple(
            (batch, spec.default_width, spec.default_height)
            for batch in range(1, min(auto, self.config.compile_max_graphs) + 1)
        )
        for batch, width, height in buckets:
            if not spec.min_side <= min(width, height) <= max(width, height) <= spec.max_side:
                log.info(
                    "model.warmup_skipped model_id=%s size=%dx%d allowed_sides=%d-%d",
                    spec.id,
                    width,
                    height,
                    spec.min_side,
                    spec.max_side,
                )
                continue
            started = time.perf_counter()
            runner = pipe.__class__(**pipeline_parts(pipe, fresh_scheduler(pipe.scheduler, None)))
            runner.set_progress_bar_config(disable=True)
            drawn_width, drawn_height = spec.draw_size(width, height)
            with torch.inference_mode():
                runner(
                    prompt=["warm-up"] * batch,
                    num_inference_steps=2,
                    guidance_scale=spec.default_guidance,
                    width=drawn_width,
                    height=drawn_height,
                    output_type="latent",
                )
            log.info(
                "model.warmed model_id=%s batch=%d size=%dx%d ms=%.0f",
                spec.id,
                batch,
                width,
                height,
                (time.perf_counter() - started) * 1000,
            )

    # Generate ----------------------------------------------------------------------------

    def generate(
        self,
        jobs: list[EngineJob],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
        on_preview: OnPreview | None = None,
    ) -> list[list[Image.Image]]:
        """One pipeline call for the whole batch; per job, `num_outputs` images seeded
        seed, seed+1, … so output 0 is the image the same seed gives alone."""
        started = time.perf_counter()
        head = jobs[0].params
        runner = self.runner(head.model_id, head.scheduler, head.is_img2img)
        # Drawn at the model's own size where it has one, then scaled up to the size asked for.
        width, height = self.specs[head.model_id].draw_size(head.width, head.height)

        def sized(image: Image.Image) -> Image.Image:
            if image.size == (head.width, head.height):
                return image
            return image.resize((head.width, head.height), Image.Resampling.LANCZOS)

        prompts: list[str] = []
        negatives: list[str] = []
        generators: list[torch.Generator] = []
        init_images: list[Image.Image] = []
        for job in jobs:
            params = job.params
            init = None
            if head.is_img2img:
                init = load_init_image(job.init_image, width, height)
            for index in range(params.num_outputs):
                prompts.append(job.prompt)
                negatives.append(job.negative_prompt or "")
                # CPU generators keep a seed's image the same on every device kind.
                generators.append(torch.Generator("cpu").manual_seed(params.seed + index))
                if init is not None:
                    init_images.append(init)
        total = head.denoising_steps
        # Previews: (job id, its first row in the batch, the steps after which to decode).
        wanted: list[tuple[str, int, list[int]]] = []
        row = 0
        for job in jobs:
            if on_preview is not None and job.params.previews:
                wanted.append((job.job_id, row, job.params.preview_steps()))
            row += job.params.num_outputs

        predicted: dict[str, Any] = {}

        def step_end(p: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            done = min(step + 1, total)
            on_step(done, total)
            for job_id, first, steps in wanted:
                if done in steps and on_preview is not None:
                    # The scheduler's estimate of the finished latents where it makes one; the
                    # noisy current latents otherwise.
                    source = predicted.get("x0")
                    if source is None or source.shape != tensors["latents"].shape:
                        source = tensors["latents"]
                    latents = source[first : first + 1]
                    on_preview(job_id, steps.index(done), sized(decode_preview(p, latents)))
            if should_stop():
                p._interrupt = True
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives if any(negatives) else None,
            "num_inference_steps": head.steps,
            "guidance_scale": head.guidance_scale,
            "generator": generators,
            "callback_on_step_end": step_end,
            "output_type": "pt",  # made 8-bit where it lies: to_images
        }
        if head.is_img2img:
            kwargs.update(image=init_images, strength=head.prompt_strength)
        else:
            kwargs.update(width=width, height=height)
        on_step(0, total)  # the call starts: a one-step batch's last step is its first
        called = time.perf_counter()
        try:
            with (
                torch.inference_mode(),
                capture_prediction(runner.scheduler, predicted, bool(wanted)),
            ):
                result = runner(**kwargs)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)  # the call's kernels, timed to their end
        finally:
            keep_vae_dtype(runner)
        self.last_timings = {
            "prepare_ms": (called - started) * 1000,
            "pipeline_ms": (time.perf_counter() - called) * 1000,
        }
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated(self.device)
            self.last_timings["cuda_peak_mb"] = peak / 2**20
        images = [sized(image) for image in to_images(result.images)]
        out: list[list[Image.Image]] = []
        for job in jobs:
            out.append(images[: job.params.num_outputs])
            images = images[job.params.num_outputs :]
        return out


class CompiledForward:
    """The UNet's forward under torch.compile, one static-shape graph per (batch, size) bucket
    (dynamic shapes would give up each bucket's own tuning after the second size).

    Left to itself, torch.compile does two things a server cannot live with (both seen on
    tiny-sd with torch 2.13, bench/RESULTS.md):
    - Its guards split graphs on the timestep's dtype: Euler, Heun and LMS pass float
      timesteps, DDIM, PNDM, DDPM, DPM-Solver, DEIS and UniPC integer ones, so each kind
      compiled its own graphs (minutes each for SDXL on a GPU), and the warm-up covered only
      the model's own kind.
      Here the timestep reaches the graph as float32. The UNet makes it float at its first
      use anyway, and every integer timestep is exact in float32: the same pixels.
    - After `recompile_limit` (8) graphs of one function it runs every new shape uncompiled,
      silently, counting what any scheduler's dtype split cost. Here the buckets are
      counted per model: at most `max_graphs` are compiled, the warm-up's first; a job of any
      other bucket runs uncompiled, and the log says so once per bucket."""

    def __init__(self, eager: Callable[..., Any], mode: str, max_graphs: int, model_id: str):
        import torch._dynamo.config as dynamo

        # torch's own cap is per function, shared by every UNet of one class: ours decides.
        name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
        setattr(dynamo, name, max(getattr(dynamo, name), 256))
        if hasattr(dynamo, "accumulated_recompile_limit"):
            dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 1024)
        self.eager = eager
        self.compiled = torch.compile(eager, mode=mode, dynamic=False)
        # These modes replay CUDA graphs, whose outputs live in memory the next replay writes
        # over. Without guidance the pipeline hands the UNet's output to the scheduler as it
        # is, and multistep schedulers (PNDM, DPM-Solver, UniPC) keep it for later steps.
        self.copy_output = mode in ("reduce-overhead", "max-autotune")
        self.max_graphs = max_graphs
        self.model_id = model_id
        self.buckets: set[tuple[Any, ...]] = set()
        self.skipped: set[tuple[Any, ...]] = set()

    def __call__(self, sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        bucket = (*sample.shape, sample.dtype)
        if bucket not in self.buckets:
            shape = "x".join(str(side) for side in sample.shape)
            if len(self.buckets) >= self.max_graphs:
                if bucket not in self.skipped:
                    self.skipped.add(bucket)
                    log.warning(
                        "model.compile_skipped model_id=%s unet_input=%s max_graphs=%d "
                        "(this bucket runs uncompiled; IMAGESMITH_COMPILE_MAX_GRAPHS)",
                        self.model_id,
                        shape,
                        self.max_graphs,
                    )
                return self.eager(sample, timestep, *args, **kwargs)
            self.buckets.add(bucket)
            log.info(
                "model.compiling model_id=%s unet_input=%s graph=%d/%d",
                self.model_id,
                shape,
                len(self.buckets),
                self.max_graphs,
            )
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(torch.float32)
        else:  # a number: as a tensor, or the graph would be specialised on its value
            timestep = torch.tensor(float(timestep), device=sample.device)
        out = self.compiled(sample, timestep, *args, **kwargs)
        if self.copy_output:
            return copied(out)
        return out


def copied(out: Any) -> Any:
    """A UNet's output (a tuple with return_dict=False, else its output dataclass) with its
    tensors copied out of a CUDA graph's memory."""
    if isinstance(out, tuple):
        return tuple(part.clone() if isinstance(part, torch.Tensor) else part for part in out)
    return out.__class__(sample=out.sample.clone())


@contextlib.contextmanager
def capture_prediction(scheduler: Any, captured: dict[str, Any], wanted: bool) -> Iterator[None]:
    """While a call runs (and `wanted`), keep the scheduler's prediction of the clean latents
    (x0) from each step in `captured["x0"]`, for previews: the noisy latents mid-run decode to
    noise under sigma-scaled schedulers (Euler, LMS). Euler, Euler a, LMS and DDIM return it
    from `step`; DPM-Solver++ keeps it as its last model output; others (PNDM) make none, and
    the preview shows the current latents. The scheduler is reused by later batches: its own
    `step` is put back after the call."""
    if not wanted:
        yield
        return
    original = scheduler.step

    # wraps: the pipelines read `step`'s signature to decide whether to pass it the seeded
    # `generator` (and `eta`); a bare (*args, **kwargs) made Euler a and DDPM draw their noise
    # unseeded in every batch where some job wanted previews.
    @functools.wraps(original)
    def step(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if isinstance(out, tuple):
            x0 = out[1] if len(out) > 1 else None
        else:
            x0 = getattr(out, "pred_original_sample", None)
        if x0 is None and "++" in str(getattr(scheduler.config, "algorithm_type", "")):
            outputs = getattr(scheduler, "model_outputs", None)
            x0 = outputs[-1] if outputs else None
        captured["x0"] = x0
        return out

    scheduler.step = step
    try:
        yield
    finally:
        del scheduler.step  # the class's method again


def keep_vae_dtype(pipe: Any) -> None:
    """Put the VAE back in the UNet's dtype if a call left it in another. SDXL's pipelines move
    a float16 VAE to float32 for the decode (and its img2img for the encode) and back, with no
    `finally`: a decode that ran out of memory left it in float32, and every later call failed
    on float16 latents ("Input type (c10::Half) and bias type (float) should be the same")."""
    vae, unet = getattr(pipe, "vae", None), getattr(pipe, "unet", None)
    if vae is not None and unet is not None and vae.dtype != unet.dtype:
        vae.to(dtype=unet.dtype)


def decode_preview(pipe: Any, latents: torch.Tensor) -> Image.Image:
    """The image the VAE decodes from mid-run latents (what the pipeline does at the end, for
    one row): unscaled as the pipeline unscales them, and in float32 where the VAE must be."""
    vae = pipe.vae
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    latents = latents.to(torch.float32)
    if mean is not None and std is not None:  # SDXL VAEs that declare their latents' statistics
        shape = (1, latents.shape[1], 1, 1)
        mean_t = torch.tensor(mean).view(shape).to(latents.device)
        std_t = torch.tensor(std).view(shape).to(latents.device)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor
    upcast = vae.dtype == torch.float16 and getattr(config, "force_upcast", False)
    if upcast:  # SDXL's VAE overflows in float16
        vae.to(torch.float32)
    try:
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)
    return to_images(pipe.image_processor.postprocess(decoded, output_type="pt"))[0]


def to_images(batch: torch.Tensor) -> list[Image.Image]:
    """The pipeline's "pt" output, (N, 3, H, W) in [0, 1] on its device, as PIL images.

    diffusers' own "pil" output copies the floats to the CPU, then scales and rounds them with
    numpy on the thread that denoises: after a GPU's batch of four 1024 px images, ~50 ms of
    a core here (bench/RESULTS.md) before the next batch can start. Here they become 8-bit
    where they lie (on a GPU, a few kernels) and only the bytes are copied, half the size of
    float16. The arithmetic is the same (float32 times 255, rounded half to even, cast), so the
    pixels are too (tests/test_engine.py)."""
    pixels = (batch.float() * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return [Image.fromarray(row) for row in pixels.cpu().numpy()]


def pipeline_bytes(pipe: Any) -> int:
    """Bytes of weights a loaded pipeline holds (parameters and buffers of every module)."""
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in (*component.parameters(), *component.buffers()):
                total += tensor.numel() * tensor.element_size()
    return total


def pipeline_parts(pipe: Any, scheduler: Any) -> dict[str, Any]:
    """The loaded components with a job's own scheduler (shared weights, no copies)."""
    parts = {**pipe.components, "scheduler": scheduler}
    if "requires_safety_checker" in inspect.signature(pipe.__class__.__init__).parameters:
        parts["requires_safety_checker"] = False  # we load no safety checker on purpose
    return parts


def load_init_image(data: bytes | None, width: int, height: int) -> Image.Image:
    """The init image, RGB, resized to the job's size (img2img keeps the init image's size)."""
    assert data is not None
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
