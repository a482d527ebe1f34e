"""The model child: a spawned process that owns torch, the pipelines and the device.

A crash, OOM or hang here kills only this process; the supervisor restarts it."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from imagesmith.engines.base import EngineConfig, EngineJob, GeneratedImage
from imagesmith.worker.cpu_share import AdaptiveThreads, CpuShare, quota_cores
from imagesmith.worker.messages import (
    BatchDone,
    CancelBatch,
    JobDone,
    JobFailed,
    Preview,
    Progress,
    Ready,
    RunBatch,
    Shutdown,
)


def _quiet_libraries() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")


if TYPE_CHECKING:
    from imagesmith.engines.diffusers_engine import DiffusersEngine


def available_cores() -> int:
    """The cores this process may run on: a container's cpuset or CPU quota, not the host's
    count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, quota_cores() or cores)


def child_main(conn: Connection, config: EngineConfig) -> None:
    # Set before huggingface_hub is imported: without downloads allowed, never touch the network.
    os.environ["HF_HUB_OFFLINE"] = "0" if config.allow_downloads else "1"
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(message)s")

    import diffusers
    import torch

    from imagesmith.engines.diffusers_engine import DiffusersEngine, pick_threads

    diffusers.utils.logging.disable_progress_bar()

    engine = DiffusersEngine(config)  # loads nothing yet: the thread count comes first
    per_batch = config.adaptive_threads and config.threads is None and engine.device == "cpu"
    share = CpuShare.start() if per_batch else None
    threads = pick_threads(config.threads, engine.device, available_cores())
    if threads is not None:
        torch.set_num_threads(threads)  # with a CpuShare, until the first batch
    try:
        serve(conn, engine, share)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the supervisor died: nobody is left to answer


def serve(conn: Connection, engine: DiffusersEngine, share: CpuShare | None = None) -> None:
    """Run batches one at a time. A reader thread keeps listening while a batch runs, so a
    CancelBatch can stop it at its next step. With a CpuShare (CPU, threads not set), torch's
    threads are chosen before each batch from what the rest of the machine used lately."""
    import torch

    from imagesmith.engines.base import ModelUnavailable

    adaptive = (
        AdaptiveThreads(share, torch.get_num_threads, torch.set_num_threads) if share else None
    )
    batches: queue.Queue[RunBatch | None] = queue.Queue()
    cancelled: set[str] = set()
    received: dict[str, float] = {}

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                batches.put(None)  # the supervisor is gone
                return
            if isinstance(message, CancelBatch):
                cancelled.add(message.batch_id)
            elif isinstance(message, Shutdown):
                batches.put(None)
                return
            elif isinstance(message, RunBatch):
                received[message.batch_id] = time.perf_counter()
                batches.put(message)

    threading.Thread(target=read, daemon=True, name="pipe-reader").start()
    conn.send(Ready(pid=os.getpid(), device=engine.device, threads=torch.get_num_threads()))
    while (batch := batches.get()) is not None:
        queued_ms = (time.perf_counter() - received.pop(batch.batch_id, time.perf_counter())) * 1000
        engine.last_timings = {}
        picked = adaptive.before(batch.jobs) if adaptive is not None else {}

        def on_step(step: int, total: int, batch_id: str = batch.batch_id) -> None:
            conn.send(Progress(batch_id, step, total))

        def should_stop(batch_id: str = batch.batch_id) -> bool:
            return batch_id in cancelled

        def on_preview(job_id: str, index: int, image: GeneratedImage) -> None:
            conn.send(Preview(job_id, index, image))

        def run(jobs: list[EngineJob]) -> None:
            results = engine.generate(jobs, on_step, should_stop, on_preview)
            if not should_stop():
                for job, images in zip(jobs, results, strict=True):
                    conn.send(JobDone(job.job_id, images))

        try:
            run(batch.jobs)
            if adaptive is not None and not should_stop():
                adaptive.after(engine.last_timings.get("pipeline_ms"))
        except ModelUnavailable as exc:
            for job in batch.jobs:
                conn.send(JobFailed(job.job_id, str(exc)))
        except Exception as exc:  # a failed generation is data: report it, keep serving
            if _out_of_memory(exc) and len(batch.jobs) > 1:
                # The batch did not fit on the device: each job may fit alone.
                logging.warning(
                    "batch.out_of_memory batch_id=%s jobs=%d: running them one at a time",
                    batch.batch_id,
                    len(batch.jobs),
                )
                engine.release_cached_memory()
                for job in batch.jobs:
                    if should_stop():  # the batch was cancelled meanwhile
                        break
                    try:
                        run([job])
                    except Exception as alone:
                        conn.send(JobFailed(job.job_id, _describe(alone)))
            else:
                logging.exception("batch.failed batch_id=%s", batch.batch_id)
                for job in batch.jobs:
                    conn.send(JobFailed(job.job_id, _describe(exc)))
        cancelled.discard(batch.batch_id)
        conn.send(
            BatchDone(batch.batch_id, {"queued_ms": queued_ms, **engine.last_timings, **picked})
        )


def _out_of_memory(exc: Exception) -> bool:
    """torch.OutOfMemoryError (CUDA), MPS's "MPS backend out of memory", CPU allocators."""
    return "out of memory" in str(exc).lower()


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
    if _out_of_memory(exc):
        return (
            "The device ran out of memory for this job; try a smaller size, fewer outputs or "
            f"fewer steps ({text})"
        )
    return f"Generation failed: {type(exc).__name__}: {text}"
