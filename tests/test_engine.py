"""The diffusers engine in-process (the test process may import torch; the API never does)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from imagesmith.catalog.models import ModelRegistry
from imagesmith.catalog.params import EngineParams
from imagesmith.engines.base import EngineConfig, EngineJob

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


def job(model_id: str, seed: int = 1) -> EngineJob:
    params = EngineParams(model_id, 64, 64, 2, 7.5, "K_EULER", seed)
    return EngineJob("g", "a red circle", None, params)


def test_loaded_models_stay_within_the_memory_budget(models_dir: Path) -> None:
    from imagesmith.engines.diffusers_engine import DiffusersEngine, pipeline_bytes

    tiny = ModelRegistry.load().get("tiny-sd")
    twin = replace(tiny, id="tiny-twin")
    config = EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict(), twin.to_dict()])
    engine = DiffusersEngine(config)
    engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)
    size = pipeline_bytes(engine.pipeline("tiny-sd"))
    assert size > 1_000_000  # ~4 MB of fp32 weights
    engine.memory_budget = int(size * 1.5)  # room for one model, not two
    engine.generate([job("tiny-twin")], lambda *_: None, lambda: False)
    assert list(engine._loaded) == ["tiny-twin"]
    assert [key[0] for key in engine._runners] == ["tiny-twin"]  # its runner went with it
    engine.memory_budget = size * 3
    engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)
    assert list(engine._loaded) == ["tiny-twin", "tiny-sd"]


def test_a_model_that_does_not_fit_beside_the_loaded_ones_drops_them_first(
    models_dir: Path,
) -> None:
    """A GPU may hold one model and not two, whatever the budget says: the move onto the
    device drops loaded models until the new one fits, and they are really freed (a reference
    kept to the evicted pipeline used to keep its weights through the collection). One that
    does not fit alone is unavailable, not a job's fault. (No GPU here: the move raises
    torch's out-of-memory error while another model is loaded, as a small card would.)"""
    import weakref

    import torch

    from imagesmith.engines.base import ModelUnavailable
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    tiny = ModelRegistry.load().get("tiny-sd")
    twin = replace(tiny, id="tiny-twin")
    config = EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict(), twin.to_dict()])
    engine = DiffusersEngine(config)
    engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)
    first = weakref.ref(engine.pipeline("tiny-sd").unet)
    moves: list[list[str]] = []
    freed_when_released: list[bool] = []  # the device cache can give back only what is freed
    engine.release_cached_memory = lambda: freed_when_released.append(first() is None)  # type: ignore[method-assign]

    class SmallCard:
        def to(self, _device: str) -> None:
            moves.append(list(engine._loaded))
            if engine._loaded:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    engine._move(SmallCard(), "tiny-twin")
    assert moves == [["tiny-sd"], []]
    assert not engine._runners
    assert freed_when_released == [True]

    class NoRoom:
        def to(self, _device: str) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    engine.pipeline("tiny-sd")
    with pytest.raises(ModelUnavailable, match="'tiny-twin' does not fit in the memory of cpu"):
        engine._move(NoRoom(), "tiny-twin")
    assert not engine._loaded


def test_a_call_that_fails_leaves_the_vae_in_the_unets_dtype(models_dir: Path) -> None:
    """SDXL's pipelines move a float16 VAE to float32 for the decode and back, with no
    `finally`: a decode that ran out of memory left it in float32, and every later batch failed
    on float16 latents. (Here the decode itself changes the VAE's dtype, then fails.)"""
    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    runner = engine.runner("tiny-sd", "K_EULER", False)

    def upcast_then_fail(*_args: object, **_kwargs: object) -> None:
        runner.vae.to(dtype=torch.float64)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    runner.vae.decode = upcast_then_fail
    with pytest.raises(torch.OutOfMemoryError):
        engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)
    assert runner.vae.dtype == runner.unet.dtype == torch.float32
    del runner.vae.decode
    assert engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)[0][0].size == (64, 64)


def test_a_reused_runner_draws_what_a_fresh_one_draws_for_every_scheduler(
    models_dir: Path,
) -> None:
    """A batch's pipeline and scheduler are built once per (model, scheduler, mode) and reused
    (issue 13: setup off the per-batch path). A scheduler keeps state within a call (step index,
    a multistep solver's history), so: after other runs of the same runner, another size and
    step count, one stopped half way, and a run with previews (which wraps the scheduler's
    `step` for the call), a job's pixels are the ones a fresh engine draws."""
    import numpy as np

    from imagesmith.engines.diffusers_engine import DiffusersEngine
    from imagesmith.engines.schedulers import SCHEDULERS

    tiny = ModelRegistry.load().get("tiny-sd")
    config = EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()])
    used = DiffusersEngine(config)

    def run(engine: DiffusersEngine, params: EngineParams, stop_at: int = 0) -> list[object]:
        steps: list[int] = []
        previews: list[object] = []
        out = engine.generate(
            [EngineJob("g", "a red circle", None, params)],
            lambda step, _total: steps.append(step),
            lambda: bool(stop_at) and len(steps) >= stop_at,
            lambda _id, _index, image: previews.append(image),
        )
        return [np.asarray(image) for image in out[0]] + previews

    init = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init, format="PNG")
    for name in SCHEDULERS:
        params = EngineParams("tiny-sd", 64, 64, 4, 7.5, name, 5)
        other = replace(params, width=96, steps=5, seed=9)
        run(used, other)
        run(used, params, stop_at=2)  # stopped half way: its state is left mid-run
        run(used, replace(params, previews=2))
        again = run(used, params)
        fresh = run(DiffusersEngine(config), params)
        assert np.array_equal(again[0], fresh[0]), name
        assert len(used._runners) == 1
        used._runners.clear()
    # img2img has a runner of its own, and reusing it changes nothing either.
    strength = EngineParams("tiny-sd", 64, 64, 4, 7.5, "K_EULER", 5, prompt_strength=0.6)
    job = EngineJob("g", "a red circle", None, strength, init.getvalue())
    first = used.generate([job], lambda *_: None, lambda: False)[0][0]
    run(used, replace(strength, prompt_strength=None))
    second = used.generate([job], lambda *_: None, lambda: False)[0][0]
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert sorted(key[2] for key in used._runners) == [False, True]


def test_the_images_are_the_pixels_diffusers_own_pil_output_gives(models_dir: Path) -> None:
    """The engine makes the pipeline's output 8-bit itself (where it lies, so that on a GPU the
    rounding is not done by numpy on the denoising thread): the same pixels as diffusers'
    `output_type="pil"`, for a batch of two seeds and a preview."""
    import numpy as np
    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine, decode_preview

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    params = EngineParams("tiny-sd", 64, 96, 3, 7.5, "K_EULER", 11, num_outputs=2)
    job = EngineJob("g", "a red circle", None, params)
    ours = engine.generate([job], lambda *_: None, lambda: False)
    runner = engine.runner("tiny-sd", "K_EULER", False)
    theirs = runner(
        prompt=["a red circle"] * 2,
        num_inference_steps=3,
        width=64,
        height=96,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in (11, 12)],
        output_type="pil",
    ).images
    assert [image.size for image in ours[0]] == [(64, 96), (64, 96)]
    for mine, reference in zip(ours[0], theirs, strict=True):
        assert np.array_equal(np.asarray(mine), np.asarray(reference))
    latents = torch.randn(1, 4, 12, 8, generator=torch.Generator("cpu").manual_seed(3))
    with torch.inference_mode():  # as in the step callback
        preview = decode_preview(runner, latents)
        scaled = latents / runner.vae.config.scaling_factor
        decoded = runner.vae.decode(scaled, return_dict=False)[0]
        reference = runner.image_processor.postprocess(decoded, output_type="pil")[0]
    assert np.array_equal(np.asarray(preview), np.asarray(reference))


def test_previews_leave_a_seeded_picture_as_it_is_for_schedulers_that_add_noise(
    models_dir: Path,
) -> None:
    """A job that streams previews may share a batch with one that does not: the preview
    hook must not change the pictures. Euler a and DDPM take the seeded generator only when
    `step`'s signature shows it; the hook's wrapper used to hide it, and their noise came
    unseeded. The scheduler, reused by later batches, gets its own `step` back."""
    import numpy as np

    from imagesmith.engines.diffusers_engine import DiffusersEngine

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    seen: list[int] = []

    def preview(_id: str, index: int, _image: object) -> None:
        seen.append(index)

    for name in ("K_EULER_ANCESTRAL", "DDPM"):
        params = EngineParams("tiny-sd", 64, 64, 4, 7.5, name, 3)
        seen.clear()
        pictures = [
            engine.generate(
                [EngineJob("g", "a red circle", None, replace(params, previews=previews))],
                lambda *_: None,
                lambda: False,
                preview,
            )[0][0]
            for previews in (0, 2)
        ]
        assert seen == [0, 1]
        assert np.array_equal(np.asarray(pictures[0]), np.asarray(pictures[1])), name
        assert "step" not in vars(engine.runner("tiny-sd", name, False).scheduler)


def test_steps_are_reported_from_the_calls_start(models_dir: Path) -> None:
    """Step 0 comes as the pipeline call starts: the supervisor times the steps from the
    reports, and claims a one-step batch's successor as that step starts, not after it."""
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    steps: list[tuple[int, int]] = []
    engine.generate([job("tiny-sd")], lambda *step: steps.append(step), lambda: False)
    assert steps == [(0, 2), (1, 2), (2, 2)]


def test_unknown_model_is_a_clear_failure(models_dir: Path) -> None:
    from imagesmith.engines.base import ModelUnavailable
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, []))
    with pytest.raises(ModelUnavailable, match="not in this worker's registry"):
        engine.generate([job("nope")], lambda *_: None, lambda: False)


def test_a_batch_that_runs_out_of_device_memory_runs_its_jobs_one_at_a_time(
    models_dir: Path,
) -> None:
    """Batching is on by default, and a batch may not fit a GPU where each of its jobs does:
    the child runs them one at a time instead of failing them all. (No GPU here: the engine
    raises torch's out-of-memory error for any batch of more than one job, as a small card
    would; single jobs run the real pipeline.) They run once the error is handled: while it is,
    its traceback holds the failed call's frames, and their tensors, on the device."""
    import sys
    import threading
    from multiprocessing import Pipe

    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine
    from imagesmith.worker.child import serve
    from imagesmith.worker.messages import BatchDone, JobDone, JobFailed, Ready, RunBatch, Shutdown

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    real_generate, calls, released = engine.generate, [], []

    handling: list[object] = []  # the exception being handled during each single job

    def small_card(jobs: list[EngineJob], *args: object) -> object:
        calls.append(len(jobs))
        if len(jobs) == 1:
            handling.append(sys.exc_info()[1])
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(jobs, *args)  # type: ignore[arg-type]

    engine.generate = small_card  # type: ignore[method-assign,assignment]
    engine.release_cached_memory = lambda: released.append(1)  # type: ignore[method-assign]
    ours, childs = Pipe()
    thread = threading.Thread(target=serve, args=(childs, engine), daemon=True)
    thread.start()
    assert isinstance(ours.recv(), Ready)
    jobs = [replace(job("tiny-sd", seed), job_id=f"j{seed}") for seed in (1, 2, 3)]
    ours.send(RunBatch("b1", jobs))
    messages = []
    while not messages or not isinstance(messages[-1], BatchDone):
        assert ours.poll(120), messages
        messages.append(ours.recv())
    ours.send(Shutdown())
    thread.join(10)
    done = [m for m in messages if isinstance(m, JobDone)]
    assert [m.job_id for m in done] == ["j1", "j2", "j3"]
    assert all(m.images[0].png.startswith(b"\x89PNG") for m in done)
    assert not [m for m in messages if isinstance(m, JobFailed)]
    assert calls == [3, 1, 1, 1] and released == [1]
    assert handling == [None, None, None]


def test_the_next_batch_denoises_while_the_last_ones_images_are_encoded(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding is off the denoising path (issue 13): the child starts a queued batch as soon
    as the last one's pipeline call returns, and encodes that one's PNGs beside it. Messages
    still leave in order (a batch's results, its BatchDone, then the next batch's progress),
    and at most two batches wait to be encoded: a third waits for room. The real tiny-sd
    pipeline runs; encoding is slowed so the overlap shows."""
    import threading
    import time
    from multiprocessing import Pipe

    from imagesmith.engines.diffusers_engine import DiffusersEngine
    from imagesmith.worker import child
    from imagesmith.worker.messages import BatchDone, JobDone, Progress, Ready, RunBatch, Shutdown

    events: list[tuple[str, str, float]] = []  # (what, which batch, when)
    real_encode = child.encode_png

    def slow_encode(image: object, level: int = 1) -> object:
        events.append(("encode", "", time.perf_counter()))
        time.sleep(1.0)
        return real_encode(image, level)  # type: ignore[arg-type]

    monkeypatch.setattr(child, "encode_png", slow_encode)
    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    engine.pipeline("tiny-sd")
    real_generate = engine.generate

    def timed(jobs: list[EngineJob], *args: object) -> object:
        events.append(("denoise", jobs[0].job_id, time.perf_counter()))
        return real_generate(jobs, *args)  # type: ignore[arg-type]

    engine.generate = timed  # type: ignore[method-assign,assignment]
    ours, childs = Pipe()
    thread = threading.Thread(target=child.serve, args=(childs, engine), daemon=True)
    thread.start()
    assert isinstance(ours.recv(), Ready)
    for name in ("b1", "b2", "b3"):
        ours.send(RunBatch(name, [replace(job("tiny-sd"), job_id=name)]))
    messages: list[object] = []
    while sum(isinstance(m, BatchDone) for m in messages) < 3:
        assert ours.poll(120), messages
        messages.append(ours.recv())
    ours.send(Shutdown())
    thread.join(10)

    starts = {name: at for what, name, at in events if what == "denoise"}
    encodes = [at for what, _, at in events if what == "encode"]
    assert starts["b2"] < encodes[0] + 1.0  # b2 ran while b1's image was being encoded
    assert starts["b3"] >= encodes[0] + 1.0  # b1 and b2 were waiting: b3 waited for room
    order = [
        (type(m).__name__, getattr(m, "batch_id", None) or getattr(m, "job_id", None))
        for m in messages
        if not isinstance(m, Progress) or m.step == m.total
    ]
    assert order == [
        (kind, name) for name in ("b1", "b2", "b3") for kind in ("Progress", "JobDone", "BatchDone")
    ]
    done = [m for m in messages if isinstance(m, JobDone)]
    assert all(m.images[0].png.startswith(b"\x89PNG") for m in done)
    timings = [m.timings for m in messages if isinstance(m, BatchDone)]
    assert all(t["encode_ms"] >= 1000 for t in timings)


def test_a_cancel_that_crosses_its_batchs_end_is_not_kept() -> None:
    """The supervisor may cancel a batch just as it ends: that cancel reaches the child after
    the batch is gone, and used to stay in the child's set for the life of the process."""
    from imagesmith.worker.child import Pending

    pending = Pending()
    pending.arrived("b1")
    pending.cancel("b1")
    assert pending.is_cancelled("b1")  # sent, queued or running: it stops at its next step
    pending.ended("b1")
    pending.arrived("b2")
    pending.ended("b2")
    pending.cancel("b2")  # crossed b2's end in the pipe
    pending.cancel("never-sent")
    assert not pending.is_cancelled("b2")
    assert pending._cancelled == set() and pending._arrived == {}


def test_a_child_whose_supervisor_is_gone_stops_at_the_next_step(models_dir: Path) -> None:
    """The pipe closes (the supervisor was killed): the child stops its batch at the next step
    and returns, runs nothing queued behind it, and does not hold the device for an orphan's
    work while a restarted server loads its model."""
    import threading
    import time
    from multiprocessing import Pipe

    from imagesmith.engines.diffusers_engine import DiffusersEngine
    from imagesmith.worker.child import serve
    from imagesmith.worker.messages import Progress, Ready, RunBatch

    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    ours, childs = Pipe()
    thread = threading.Thread(target=serve, args=(childs, engine), daemon=True)
    thread.start()
    assert isinstance(ours.recv(), Ready)
    long = replace(job("tiny-sd"), params=replace(job("tiny-sd").params, steps=4000))
    ours.send(RunBatch("long", [replace(long, job_id="long")]))
    ours.send(RunBatch("queued", [replace(long, job_id="queued")]))
    while not isinstance(ours.recv(), Progress):  # it denoises (4000 steps: many seconds)
        pass
    ours.close()
    started = time.monotonic()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5  # at the next step, not after 8000 of them


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
@pytest.mark.alone  # reads the machine's CPU use
def test_on_a_cpu_the_child_leaves_torch_the_cores_the_rest_of_the_machine_does_not_use(
    models_dir: Path,
) -> None:
    """With threads unset, the child picks torch's threads before each batch: every core while
    nothing else runs on them, one fewer while another process keeps a core busy (the API under
    load). A real spinning process is the load; the batches run the real tiny-sd pipeline."""
    import subprocess
    import sys
    import threading
    import time
    from multiprocessing import Pipe

    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine
    from imagesmith.worker.child import available_cores, serve
    from imagesmith.worker.cpu_share import WINDOW_SAMPLES, CpuShare
    from imagesmith.worker.messages import BatchDone, Ready, RunBatch, Shutdown

    cores = available_cores()
    window = 0.25 * WINDOW_SAMPLES + 0.3
    tiny = ModelRegistry.load().get("tiny-sd")
    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict()]))
    engine.pipeline("tiny-sd")  # loaded before the windows below: loading is our own CPU
    share = CpuShare.start()
    assert share is not None
    ours, childs = Pipe()
    was = torch.get_num_threads()
    thread = threading.Thread(target=serve, args=(childs, engine, share), daemon=True)
    thread.start()

    def batch(name: str) -> dict[str, float]:
        ours.send(RunBatch(name, [replace(job("tiny-sd"), job_id=name)]))
        while not isinstance(message := ours.recv(), BatchDone):
            assert ours.poll(120)
        return message.timings

    try:
        assert isinstance(ours.recv(), Ready)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(window)
            busy = batch("busy")
        finally:
            spinner.kill()
            spinner.wait()
        time.sleep(window)
        quiet = batch("quiet")
        ours.send(Shutdown())
        thread.join(10)
    finally:
        share.stop()
        torch.set_num_threads(was)
    assert busy["others_cores"] >= 0.5 and busy["threads"] == max(1, cores - 1), busy
    assert quiet["others_cores"] < 0.5 and quiet["threads"] == cores, quiet
