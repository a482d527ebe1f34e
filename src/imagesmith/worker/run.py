"""What a worker process runs: the local worker (a model child with torch and diffusers) for
local models, and the remote runner for models a provider runs. A machine without the local
engine installed (`pip install "imagesmith[server]"` without `[diffusers]`) serves remote
models only."""

from __future__ import annotations

import asyncio
import importlib.util
import logging

from imagesmith.config import Settings
from imagesmith.runtime import Runtime

log = logging.getLogger(__name__)


def local_engine_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers"))


def worker_runtime(settings: Settings) -> Runtime:
    """An `imagesmith worker` process's runtime. On SQLite the API that queues its jobs is
    another process, whose announcements never reach this one: its claims always look."""
    runtime = Runtime.open(settings)
    if settings.is_sqlite:
        runtime.hear_only_this_process(False)
    return runtime


async def run_workers(runtime: Runtime, stop: asyncio.Event) -> None:
    from imagesmith.worker.remote import RemoteRunner

    runs = []
    if runtime.registry.remote():
        runs.append(RemoteRunner(runtime).run(stop))
    if local_engine_installed():
        from imagesmith.worker.supervisor import Worker

        runs.append(Worker(runtime).run(stop))
    else:
        log.warning(
            "worker.local_engine_missing: torch/diffusers are not installed, so only remote "
            "models run here (pip install 'imagesmith[diffusers]' for local ones)"
        )
    if not runs:
        log.error("worker.nothing_to_run: no local engine and no remote model is configured")
        await stop.wait()
        return
    for outcome in await asyncio.gather(*runs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.error("worker.crashed error=%r", outcome, exc_info=outcome)
