"""The GPU-path settings (dtype, attention, channels-last, compile warm-up), checked on CPU with
the tiny pipeline: each explicit value is really applied to the loaded modules, a job still
makes a picture, and the defaults leave CPU as it was. torch.compile runs here with dynamo's
own eager backend: its real tracing, guards and graph cache, without inductor's code
generation (43 s a bucket for tiny-sd on two cores; run by hand, bench/RESULTS.md)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from imagesmith.catalog.models import ModelRegistry
from imagesmith.catalog.params import EngineParams
from imagesmith.config import Settings
from imagesmith.engines.base import EngineConfig, EngineJob

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


def engine(models_dir: Path, **speed: Any) -> Any:
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    tiny = ModelRegistry.load().get("tiny-sd")
    return DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()], **speed))


def run(engine: Any, previews: int = 0) -> tuple[Image.Image, list[Image.Image]]:
    """The job's image as the model child sends it (a PNG), and its previews."""
    from imagesmith.worker.child import encode_png

    params = EngineParams("tiny-sd", 64, 64, 4, 7.5, "K_EULER", 5, previews=previews)
    partial: list[Image.Image] = []
    [[image]] = engine.generate(
        [EngineJob("g", "a red circle", None, params)],
        lambda *_: None,
        lambda: False,
        lambda _job, _index, preview: partial.append(preview),
    )
    picture = Image.open(io.BytesIO(encode_png(image).png))
    picture.load()
    return picture, partial


def draw(engine: Any, scheduler: str = "K_EULER", width: int = 64, height: int = 64) -> bytes:
    """The pixels one job of 4 steps draws."""
    params = EngineParams("tiny-sd", width, height, 4, 7.5, scheduler, 5)
    [[image]] = engine.generate(
        [EngineJob("g", "a red circle", None, params)], lambda *_: None, lambda: False
    )
    return bytes(image.tobytes())


@pytest.fixture
def eager_compile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """torch.compile on dynamo's eager backend; returns a counter of the graphs compiled. The
    graph cache starts empty (a graph serves every UNet of the same shape, so another test's
    would be reused) and is emptied again after the test."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    real = torch.compile

    def compile_eagerly(fn: Any, mode: str | None = None, dynamic: bool | None = None) -> Any:
        return real(fn, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    start = counters["stats"]["unique_graphs"]
    yield lambda: int(counters["stats"]["unique_graphs"] - start)
    torch._dynamo.reset()


def test_one_compiled_graph_serves_every_scheduler_with_the_same_pixels(
    models_dir: Path, eager_compile: Callable[[], int]
) -> None:
    """Euler passes float timesteps, DDIM and DPM-Solver integer ones: without the float32
    timestep, each kind compiled graphs of its own, and the warm-up covered only Euler."""
    compiled = engine(models_dir, compile=True, compile_warmup=((1, 64, 64),))
    compiled.pipeline("tiny-sd")
    assert eager_compile() == 1  # the warm-up's bucket
    plain = engine(models_dir)
    for scheduler in ("K_EULER", "DDIM", "DPM++_2M"):
        assert draw(compiled, scheduler) == draw(plain, scheduler), scheduler
    assert eager_compile() == 1


def test_auto_warm_up_compiles_each_batch_at_the_size_the_model_draws(
    models_dir: Path, eager_compile: Callable[[], int]
) -> None:
    tiny = engine(models_dir, compile=True, compile_warmup_auto=2)
    tiny.pipeline("tiny-sd")
    assert eager_compile() == 2  # batches 1 and 2 at tiny-sd's default 64x64
    params = EngineParams("tiny-sd", 64, 64, 2, 7.5, "DDIM", 5)
    tiny.generate(
        [EngineJob(f"g{i}", "a red circle", None, params) for i in range(2)],
        lambda *_: None,
        lambda: False,
    )
    assert eager_compile() == 2
    # The demo draws 256 px at 64 px (draw_short_side): warmed where it draws, not at 256.
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    demo = ModelRegistry.load().get("demo")
    drawing = DiffusersEngine(
        EngineConfig(
            str(models_dir), "cpu", False, [demo.to_dict()], compile=True,
            compile_warmup=((1, 256, 256),),
        )
    )  # fmt: skip
    drawing.pipeline("demo")
    assert eager_compile() == 3
    params = EngineParams("demo", 256, 256, 2, demo.default_guidance, None, 5)
    [[image]] = drawing.generate(
        [EngineJob("g", "a red circle", None, params)], lambda *_: None, lambda: False
    )
    assert image.size == (256, 256) and eager_compile() == 3


def test_buckets_past_the_cap_run_uncompiled_and_say_so(
    models_dir: Path, eager_compile: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    compiled = engine(models_dir, compile=True, compile_max_graphs=2)
    draw(compiled, width=64, height=64)
    draw(compiled, width=112, height=64)
    assert eager_compile() == 2
    with caplog.at_level(logging.INFO, logger="imagesmith.engines.diffusers_engine"):
        third = [draw(compiled, width=64, height=112) for _ in range(2)]
    assert eager_compile() == 2
    assert third[0] == third[1] == draw(engine(models_dir), width=64, height=112)
    skipped = [r.getMessage() for r in caplog.records if "compile_skipped" in r.getMessage()]
    # The UNet's input: 2 rows (with guidance), 4 latent channels, 112 / 8 by 64 / 8.
    assert len(skipped) == 1 and "unet_input=2x4x14x8 max_graphs=2" in skipped[0], skipped


def test_cuda_graph_modes_hand_out_copies_of_the_unets_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CUDA graph's replay writes its output where the last replay's lies (no CUDA here: a
    stand-in replays into one buffer), and multistep schedulers keep earlier outputs."""
    import torch

    from imagesmith.engines.diffusers_engine import CompiledForward

    buffer = torch.zeros(2, 4, 8, 8)

    def graph(fn: Any, mode: str | None = None, dynamic: bool | None = None) -> Any:
        def replay(sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            return (buffer.copy_(sample),)

        return replay

    monkeypatch.setattr(torch, "compile", graph)
    for mode, kept in (("reduce-overhead", True), ("max-autotune", True), ("default", False)):
        forward = CompiledForward(lambda *a, **k: None, mode, 8, "tiny-sd")
        (first,) = forward(torch.ones(2, 4, 8, 8), torch.tensor(981))
        forward(torch.full((2, 4, 8, 8), 2.0), torch.tensor(961))
        assert bool((first == 1).all()) is kept, mode


def processors(module: Any) -> set[str]:
    return {type(p).__name__ for p in module.attn_processors.values()}


def is_channels_last(module: Any) -> bool:
    import torch

    weight = module.conv_in.weight
    return bool(weight.is_contiguous(memory_format=torch.channels_last)) and not (
        weight.is_contiguous()
    )


def test_defaults_on_cpu_are_float32_sdpa_contiguous(models_dir: Path) -> None:
    import torch

    pipe = engine(models_dir).pipeline("tiny-sd")
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    assert processors(pipe.unet) == processors(pipe.vae) == {"AttnProcessor2_0"}
    assert not is_channels_last(pipe.unet)
    assert not is_channels_last(pipe.vae.decoder)


def test_bfloat16_channels_last_default_attention_are_applied(models_dir: Path) -> None:
    import numpy as np
    import torch

    bf16 = engine(models_dir, dtype="bfloat16", channels_last="on", attention="default")
    pipe = bf16.pipeline("tiny-sd")
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    assert is_channels_last(pipe.unet)
    assert is_channels_last(pipe.vae.decoder)
    assert processors(pipe.unet) == processors(pipe.vae) == {"AttnProcessor"}
    picture, _ = run(bf16)
    assert (picture.format, picture.size, picture.mode) == ("PNG", (64, 64), "RGB")
    pixels = np.asarray(picture)
    assert pixels.std() > 5  # a picture (noise, from random weights), not a blank or NaN image


def test_float16_decode_keeps_the_vae_in_float16_and_previews_decode(models_dir: Path) -> None:
    import numpy as np
    import torch

    fp16 = engine(models_dir, dtype="float16", attention="sdpa")
    pipe = fp16.pipeline("tiny-sd")
    assert pipe.vae.config.force_upcast  # so decode_preview upcasts around its decode
    picture, previews = run(fp16, previews=2)
    assert pipe.vae.dtype == torch.float16  # upcast for the decode, then put back
    assert processors(pipe.unet) == {"AttnProcessor2_0"}
    assert len(previews) == 2
    for image in [picture, *previews]:
        assert image.size == (64, 64)
        assert np.asarray(image).std() > 5


def test_auto_dtype_per_device_and_variant() -> None:
    import torch

    from imagesmith.engines.diffusers_engine import pick_dtype

    assert pick_dtype("auto", "cpu", "fp16") == torch.float32
    assert pick_dtype("auto", "cuda", None) == torch.float16
    assert pick_dtype("auto", "cuda:1", "fp16") == torch.float16
    assert pick_dtype("auto", "cuda", "bf16") == torch.bfloat16
    assert pick_dtype("auto", "mps", None) == torch.float16
    assert pick_dtype("float32", "cuda", "fp16") == torch.float32


def test_auto_threads_leave_the_api_a_core_on_cpu() -> None:
    from imagesmith.engines.diffusers_engine import pick_threads

    assert pick_threads(None, "cpu", 2) == 1
    assert pick_threads(None, "cpu", 16) == 15
    assert pick_threads(None, "cpu", 1) == 1
    assert pick_threads(None, "cuda", 16) is None  # torch's own
    assert pick_threads(3, "cpu", 2) == 3 and pick_threads(4, "cuda", 16) == 4


def test_settings_reach_the_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagesmith.worker.supervisor import engine_config

    monkeypatch.setenv("IMAGESMITH_DTYPE", "bfloat16")
    monkeypatch.setenv("IMAGESMITH_CHANNELS_LAST", "off")
    monkeypatch.setenv("IMAGESMITH_COMPILE", "on")
    monkeypatch.setenv("IMAGESMITH_COMPILE_MODE", "max-autotune-no-cudagraphs")
    monkeypatch.setenv("IMAGESMITH_COMPILE_WARMUP", "1x1024x1024, 4x768x1024")
    monkeypatch.setenv("IMAGESMITH_COMPILE_MAX_GRAPHS", "16")
    monkeypatch.setenv("IMAGESMITH_TORCH_THREADS", "1")
    monkeypatch.setenv("IMAGESMITH_PNG_COMPRESS_LEVEL", "9")
    runtime: Any = SimpleNamespace(settings=Settings(), registry=ModelRegistry.load())
    config = engine_config(runtime)
    assert (config.dtype, config.attention, config.channels_last) == ("bfloat16", "auto", "off")
    assert (config.compile, config.compile_mode) == (True, "max-autotune-no-cudagraphs")
    assert config.compile_warmup == ((1, 1024, 1024), (4, 768, 1024))
    assert config.compile_max_graphs == 16
    assert (config.threads, config.png_compress_level) == (1, 9)
    runtime.settings = Settings(compile="off")
    assert engine_config(runtime).compile is False
    runtime.settings = Settings(compile_warmup="auto", worker_batch_size=3)
    config = engine_config(runtime)
    assert (config.compile_warmup, config.compile_warmup_auto) == ((), 3)


def test_png_compress_level_is_applied_to_the_pictures(models_dir: Path) -> None:
    """The same picture (the same pixels: PNG is lossless) is sent larger at level 0: the model
    child encodes what the engine draws at the configured level."""
    import threading
    from multiprocessing import Pipe

    from imagesmith.worker.child import serve
    from imagesmith.worker.messages import BatchDone, JobDone, Ready, RunBatch, Shutdown

    params = EngineParams("tiny-sd", 64, 64, 2, 7.5, "K_EULER", 5)
    stored = {}
    for level in (0, 9):
        ours, theirs = Pipe()
        drawing = engine(models_dir, png_compress_level=level)
        thread = threading.Thread(target=serve, args=(theirs, drawing), daemon=True)
        thread.start()
        assert isinstance(ours.recv(), Ready)
        ours.send(RunBatch("b", [EngineJob("g", "a red circle", None, params)]))
        while not isinstance(message := ours.recv(), BatchDone):
            if isinstance(message, JobDone):
                stored[level] = message.images[0].png
        ours.send(Shutdown())
        thread.join(10)
    pixels = {level: Image.open(io.BytesIO(png)).tobytes() for level, png in stored.items()}
    assert pixels[0] == pixels[9]
    assert len(stored[0]) > len(stored[9]) * 1.1, {k: len(v) for k, v in stored.items()}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("dtype", "fp16", "'auto', 'float32', 'float16' or 'bfloat16'"),
        ("attention", "flash", "'auto', 'sdpa' or 'default'"),
        ("channels_last", "yes", "'auto', 'on' or 'off'"),
        ("compile", "true", "'off' or 'on'"),
        ("compile_warmup", "4x1024", "'4x1024' is not BATCHxWIDTHxHEIGHT"),
        ("compile_warmup", "1x1020x1024", "positive multiples of 8"),
        ("compile_max_graphs", "0", "greater than or equal to 1"),
    ],
)
def test_bad_values_are_refused_with_the_choices(name: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{name: value})
    text = str(caught.value)
    assert name in text and message in text, text
