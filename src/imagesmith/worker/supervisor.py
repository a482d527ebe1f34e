"""The worker: claim jobs from the queue, run them in the model child, report the outcome.

The worker owns processes, leases and timers; the core (`generation/jobs.py`) owns the jobs.
A claim is a lease this loop renews while the child works; if this process dies, the lease
runs out and any worker puts the job back in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import socket
import time
import uuid

from imagesmith.engines.base import EngineConfig, EngineJob, GeneratedImage
from imagesmith.generation.jobs import ClaimedJob, JobQueue
from imagesmith.runtime import Runtime
from imagesmith.worker.messages import (
    BatchDone,
    CancelBatch,
    ChildExited,
    JobDone,
    JobFailed,
    Preview,
    Progress,
    RunBatch,
)
from imagesmith.worker.process import ChildStartFailed, ModelProcess

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5
CANCEL_CHECK_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0


class WorkerState(enum.StrEnum):
    STARTING = "starting"  # the model child is starting
    IDLE = "idle"  # waiting for work
    BUSY = "busy"  # a batch is in the child
    RESTARTING = "restarting"  # the child crashed, hung or was killed: a fresh one starts
    STOPPING = "stopping"  # finishing (or handing back) the current batch
    STOPPED = "stopped"


ALLOWED: dict[WorkerState, set[WorkerState]] = {
    WorkerState.STARTING: {WorkerState.IDLE, WorkerState.STOPPING},
    WorkerState.IDLE: {WorkerState.BUSY, WorkerState.STOPPING},
    WorkerState.BUSY: {WorkerState.IDLE, WorkerState.RESTARTING, WorkerState.STOPPING},
    WorkerState.RESTARTING: {WorkerState.IDLE, WorkerState.STOPPING},
    WorkerState.STOPPING: {WorkerState.STOPPED},
    WorkerState.STOPPED: set(),
}


def engine_config(runtime: Runtime) -> EngineConfig:
    settings = runtime.settings
    return EngineConfig(
        models_dir=str(settings.resolved_models_dir),
        device=settings.device,
        allow_downloads=settings.allow_downloads,
        model_cache_gb=settings.model_cache_gb,
        models=[spec.to_dict() for spec in runtime.registry.all()],
    )


def engine_job(job: ClaimedJob) -> EngineJob:
    return EngineJob(
        job_id=job.generation_id,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        params=job.params,
        init_image=job.init_image,
    )


class Worker:
    def __init__(self, runtime: Runtime, worker_id: str | None = None):
        self.rt = runtime
        self.settings = runtime.settings
        self.worker_id = worker_id or (
            f"{socket.gethostname()[:100]}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.queue = JobQueue(runtime, self.worker_id)
        self.child = ModelProcess(engine_config(runtime))
        self.state = WorkerState.STARTING
        self.batches_run = 0
        self._storing: set[asyncio.Future[None]] = set()

    def _become(self, state: WorkerState) -> None:
        if state is self.state:
            return
        if state not in ALLOWED[self.state]:
            raise RuntimeError(f"worker state {self.state} cannot become {state}")
        log.debug("worker.state worker_id=%s state=%s", self.worker_id, state)
        self.state = state

    # Main loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.started worker_id=%s", self.worker_id)
        await self.queue.register(socket.gethostname(), os.getpid())
        beating = asyncio.ensure_future(self._beat())
        try:
            if not await self._start_child(stop):
                return
            self._become(WorkerState.IDLE)
            while not stop.is_set():
                await self.queue.requeue_expired()
                jobs = await self.queue.claim(self.settings.worker_batch_size)
                if not jobs:
                    await self._idle(stop)
                    continue
                await self._run_until_done_or_stopped(jobs, stop)
        finally:
            self._become(WorkerState.STOPPING)
            await self._drain_storing()
            beating.cancel()
            await self.child.stop()
            await self.queue.stopped()
            self._become(WorkerState.STOPPED)
            log.info("worker.stopped worker_id=%s", self.worker_id)

    async def _beat(self) -> None:
        """Tell readiness this worker is alive, busy or idle."""
        while True:
            try:
                await self.queue.beat(self.child.device, self.batches_run)
            except Exception as exc:  # the database may blip; the next beat retries
                log.warning("worker.heartbeat_failed worker_id=%s error=%s", self.worker_id, exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _idle(self, stop: asyncio.Event) -> None:
        work = asyncio.ensure_future(self.rt.notifier.wait_for_work(self.settings.poll_seconds))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stopped):
            task.cancel()

    async def _start_child(self, stop: asyncio.Event) -> bool:
        delay = 1.0
        while not stop.is_set():
            try:
                await self.child.start()
                return True
            except ChildStartFailed as exc:
                log.error(
                    "child.start_failed worker_id=%s error=%s retry_in=%.0fs",
                    self.worker_id,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        return False

    async def _run_until_done_or_stopped(self, jobs: list[ClaimedJob], stop: asyncio.Event) -> None:
        """A stop request lets the current batch finish; past the grace period it is handed back."""
        batch = asyncio.ensure_future(self._run_batch(jobs))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({batch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not batch.done():
            done, _ = await asyncio.wait({batch}, timeout=self.settings.shutdown_grace_seconds)
            if not done:
                batch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await batch
        if batch.done() and not batch.cancelled() and batch.exception() is not None:
            log.error("batch.crashed worker_id=%s error=%r", self.worker_id, batch.exception())

    # One batch ---------------------------------------------------------------------------

    async def _run_batch(self, jobs: list[ClaimedJob]) -> None:
        held = {job.generation_id: job for job in jobs}
        batch_id = str(uuid.uuid4())
        leases = asyncio.ensure_future(self._renew_leases(jobs))
        finished: list[tuple[ClaimedJob, list[GeneratedImage]]] = []
        self._become(WorkerState.BUSY)
        try:
            self.child.send(RunBatch(batch_id, [engine_job(job) for job in jobs]))
            await self._collect(batch_id, held, finished)
        except asyncio.CancelledError:
            # Shutdown past the grace period: stop the child and hand the jobs back unharmed.
            leases.cancel()
            self.child.kill()
            held.update({job.generation_id: job for job, _ in finished})
            await asyncio.shield(
                self.queue.release(held.values(), count_retry=False, reason="worker shut down")
            )
            raise
        except Exception as exc:
            # A bug or an outage in this process: hand the jobs back now rather than at lease
            # expiry, and start from a clean child.
            leases.cancel()
            log.exception("batch.crashed worker_id=%s", self.worker_id)
            self.child.kill()
            held.update({job.generation_id: job for job, _ in finished})
            await self.queue.release(
                held.values(), count_retry=True, reason=f"worker error: {exc!r}"[:300]
            )
            await self._wait_for_exit()
            await self._restart_child()
            return
        # Store this batch's images while the child denoises the next one.
        task = asyncio.ensure_future(self._store_all(finished, leases))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        self.batches_run += 1
        if self.state is WorkerState.BUSY:
            self._become(WorkerState.IDLE)

    async def _store_all(
        self, finished: list[tuple[ClaimedJob, list[GeneratedImage]]], leases: asyncio.Future[None]
    ) -> None:
        try:
            for job, images in finished:
                try:
                    await self.queue.succeed(job, images)
                except Exception as exc:  # storage down: the lease runs out, the job runs again
                    log.error(
                        "generation.store_failed generation_id=%s error=%r",
                        job.generation_id,
                        exc,
                    )
        finally:
            leases.cancel()

    async def _drain_storing(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    async def _renew_leases(self, jobs: list[ClaimedJob]) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.renew(jobs)
            except Exception as exc:  # a locked or blipping database: the next renewal retries
                log.warning("lease.renew_failed worker_id=%s error=%s", self.worker_id, exc)

    async def _collect(
        self,
        batch_id: str,
        held: dict[str, ClaimedJob],
        finished: list[tuple[ClaimedJob, list[GeneratedImage]]],
    ) -> None:
        """Follow the batch until it ends; finished images are handed back in `finished`."""
        deadline = time.monotonic() + self.settings.job_timeout_seconds
        last_check = time.monotonic()
        last_progress = 0.0
        stop_sent = False
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), CANCEL_CHECK_SECONDS)
            message = await self.child.next_message(wait)
            if time.monotonic() - last_check >= CANCEL_CHECK_SECONDS:
                last_check = time.monotonic()
                dropped = await self._drop_cancelled(held)
                if dropped and not held and not finished and not stop_sent:
                    # Every job in the batch was cancelled: stop the child at its next step.
                    self.child.send(CancelBatch(batch_id))
                    stop_sent = True
            if message is None:
                if time.monotonic() < deadline:
                    continue
                self.child.kill()
                await self._wait_for_exit()
                await self.queue.release(
                    held.values(),
                    count_retry=True,
                    reason=f"the model process hung for {self.settings.job_timeout_seconds:.0f} s",
                )
                await self._restart_child()
                return
            if isinstance(message, ChildExited):
                await self.queue.release(
                    held.values(),
                    count_retry=True,
                    reason=f"the model process died (exit code {message.exitcode})",
                )
                await self._restart_child()
                return
            if isinstance(message, Progress) and message.batch_id == batch_id and held:
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL:
                    last_progress = time.monotonic()
                    await self.queue.report_progress(held.values(), message.step, message.total)
            elif isinstance(message, Preview) and message.job_id in held:
                await self.queue.store_preview(held[message.job_id], message.index, message.image)
            elif isinstance(message, JobDone) and message.job_id in held:
                finished.append((held.pop(message.job_id), message.images))
            elif isinstance(message, JobFailed) and message.job_id in held:
                await self.queue.fail(held.pop(message.job_id), message.message)
            elif isinstance(message, BatchDone) and message.batch_id == batch_id:
                if held:
                    await self.queue.release(
                        held.values(), count_retry=True, reason="no result for the job"
                    )
                return

    async def _drop_cancelled(self, held: dict[str, ClaimedJob]) -> int:
        """Forget jobs cancelled (or re-queued) while they ran; their results will be discarded."""
        still = await self.queue.still_held(held.values())
        dropped = set(held) - still
        for generation_id in dropped:
            log.info("generation.dropped generation_id=%s (cancelled or re-queued)", generation_id)
            del held[generation_id]
        return len(dropped)

    async def _wait_for_exit(self) -> None:
        while True:
            message = await self.child.next_message(10.0)
            if message is None or isinstance(message, ChildExited):
                return

    async def _restart_child(self) -> None:
        self._become(WorkerState.RESTARTING)
        await self.child.stop(timeout=1.0)
        await self._start_child(asyncio.Event())
        self._become(WorkerState.IDLE)
