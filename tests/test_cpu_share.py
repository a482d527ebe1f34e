"""Choosing torch's threads from what the rest of the machine uses (worker/cpu_share.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from imagesmith.worker.cpu_share import (
    RETRY_EVERY,
    WINDOW_SAMPLES,
    CpuShare,
    ThreadTuner,
    quota_cores,
    threads_for,
)

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


def test_torch_gets_the_cores_the_others_leave_rounded_to_whole_cores() -> None:
    assert threads_for(2, None) == 1  # nothing measured yet: one core left to the API
    assert threads_for(2, 0.0) == 2 and threads_for(2, 0.49) == 2
    assert threads_for(2, 0.6) == 1 and threads_for(2, 1.9) == 1 and threads_for(2, 7.0) == 1
    assert threads_for(16, 0.2) == 16 and threads_for(16, 3.2) == 13
    assert threads_for(1, None) == 1 and threads_for(1, 0.0) == 1


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
@pytest.mark.alone  # reads the machine's CPU use
def test_the_share_does_not_count_its_own_process() -> None:
    """The child itself keeps its cores busy while a batch runs: that is not the others' use."""
    share = CpuShare.start()
    assert share is not None
    end = time.monotonic() + 0.25 * WINDOW_SAMPLES + 0.3
    while time.monotonic() < end:  # spin this process for more than the window
        pass
    others = share.others()
    share.stop()  # its thread would sample on through every later test
    assert others is not None and others < 0.5


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux's /proc/stat")
def test_the_childs_png_encoders_count_as_the_others_use() -> None:
    """The encode threads run beside the denoising: a core they keep busy is not one torch
    can have, so their CPU counts as the others' (the rest of the process is the model's)."""
    import threading
    from multiprocessing import Pipe

    import numpy as np
    from PIL import Image

    from imagesmith.worker.child import Outbox

    share = CpuShare.start()
    assert share is not None
    spent = [0.0]  # an "encoder" that spins a core for longer than the window

    def encode() -> None:
        end = time.monotonic() + 0.25 * WINDOW_SAMPLES + 0.3
        while time.monotonic() < end:
            spent[0] = time.thread_time()

    share.beside = lambda: spent[0]
    spinner = threading.Thread(target=encode)
    spinner.start()
    spinner.join()
    others = share.others()
    share.stop()
    assert others is not None and others > 0.6

    ours, theirs = Pipe()
    outbox = Outbox(theirs, 1, 1, threading.Event())
    noise = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    outbox.post_images("j", [Image.fromarray(noise)] * 4)
    assert ours.poll(30) and ours.recv().job_id == "j"
    outbox.close()
    assert outbox.cpu_seconds() > 0.005  # ~25 ms of CPU a 512 px PNG here


def test_while_the_machine_is_quiet_each_shape_runs_on_the_faster_thread_count() -> None:
    """A small model at a small size is faster on fewer threads, a bigger one on all of them:
    each shape is timed on both, then runs on its faster one, and the slower is timed again now
    and then. Under the others' load the share alone decides and nothing is learnt."""
    tuner = ThreadTuner(cores=2)
    small, big = ("tiny-sd", 64, 64, 2, 1), ("tiny-sd", 256, 256, 4, 4)
    per_image = {(small, 2): 0.09, (small, 1): 0.05, (big, 2): 0.25, (big, 1): 0.40}
    seen: dict[tuple[object, ...], list[int]] = {small: [], big: []}
    for _ in range(RETRY_EVERY + 2):
        for shape in (small, big):
            threads = tuner.choose(shape, 0.1)
            seen[shape].append(threads)
            tuner.record(shape, threads, 0.1, per_image[(shape, threads)])
    assert seen[small][:3] == [2, 1, 1] and seen[big][:3] == [2, 1, 2]
    assert seen[small].count(2) == 2 and seen[big].count(1) == 2  # one retry of the loser each
    assert tuner.choose(big, 1.2) == 1  # the API is busy: a core is left to it
    tuner.record(big, 1, 1.2, 9.9)  # a time under contention is not learnt
    assert tuner.choose(big, 0.0) == 2
    assert tuner.choose(("demo", 64, 64, 8, 1), None) == 1  # nothing measured yet


def test_a_container_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    """`docker run --cpus 2` on a big host: the affinity lists every host core, the quota two."""
    assert quota_cores(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert quota_cores(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert quota_cores(tmp_path) == 2  # 1.5 cores: two threads may run, throttled
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cores(tmp_path) is None  # cgroup v1, unlimited
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert quota_cores(tmp_path) == 4


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
def test_threads_per_batch_only_when_the_operator_asks(tmp_path: Path, models_dir: Path) -> None:
    """Off by default (a seed's bytes must not depend on the machine's load); with
    IMAGESMITH_ADAPTIVE_THREADS the worker's batch lines say what it chose and why."""
    from tests.serverproc import Server, create_key

    for adaptive in (False, True):
        srv = Server(tmp_path / f"srv-{adaptive}", models_dir, adaptive_threads=adaptive).start()
        try:
            with srv.client(create_key(srv.env, "o", "p")) as api:
                made = api.post(
                    "/api/v1/generations", json={"prompt": "a dot"}, headers={"Prefer": "wait=60"}
                )
                assert made.json()["data"]["status"] == "success", made.text
            srv.wait_for_log("batch.done", 10)
            assert ("others_cores=" in srv.log()) is adaptive
        finally:
            srv.stop()
