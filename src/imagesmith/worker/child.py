"""The model child: a spawned process that owns torch, the pipelines and the device.

A crash, OOM or hang here kills only this process; the supervisor restarts it."""

from __future__ import annotations

import logging
import os
import warnings
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from imagesmith.worker.messages import (
    BatchDone,
    ChildConfig,
    JobDone,
    JobFailed,
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


def child_main(conn: Connection, config: ChildConfig) -> None:
    # Set before huggingface_hub is imported: without downloads allowed, never touch the network.
    os.environ["HF_HUB_OFFLINE"] = "0" if config.allow_downloads else "1"
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(message)s")

    import diffusers

    from imagesmith.engines.diffusers_engine import DiffusersEngine

    diffusers.utils.logging.disable_progress_bar()

    engine = DiffusersEngine(config)
    try:
        serve(conn, engine)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the supervisor died: nobody is left to answer


def serve(conn: Connection, engine: DiffusersEngine) -> None:
    from imagesmith.engines.base import ModelUnavailable

    conn.send(Ready(pid=os.getpid(), device=engine.device))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the supervisor is gone
        if isinstance(message, Shutdown):
            return
        if not isinstance(message, RunBatch):
            continue
        batch = message

        def on_step(step: int, total: int, batch_id: str = batch.batch_id) -> None:
            conn.send(Progress(batch_id, step, total))

        try:
            images = engine.generate(batch.jobs, on_step, lambda: False)
            for job, image in zip(batch.jobs, images, strict=True):
                conn.send(
                    JobDone(
                        job.generation_id, job.job_version, image.png, image.width, image.height
                    )
                )
        except ModelUnavailable as exc:
            for job in batch.jobs:
                conn.send(JobFailed(job.generation_id, job.job_version, str(exc)))
        except Exception as exc:  # a failed generation is data: report it, keep serving
            message_text = _describe(exc)
            logging.exception("batch.failed batch_id=%s", batch.batch_id)
            for job in batch.jobs:
                conn.send(JobFailed(job.generation_id, job.job_version, message_text))
        conn.send(BatchDone(batch.batch_id))


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
    if "out of memory" in text.lower():
        return (
            "The device ran out of memory for this job; try a smaller size, fewer outputs or "
            f"fewer steps ({text})"
        )
    return f"Generation failed: {type(exc).__name__}: {text}"
