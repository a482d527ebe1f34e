"""The worker: claim jobs from the queue, run them in the model child, report the outcome.

The worker owns processes, leases and timers; the core (`generation/jobs.py`) owns the jobs.
A claim is a lease this loop renews while the child works; if this process dies, the lease
runs out and any worker puts the job back in the queue.

When a batch reaches its last step, the next batch is claimed and sent to the child, which queues
it: the child starts it the moment the current one ends, so the claim and dispatch round trip
overlaps the last step, the decode and the encode instead of following them. Where steps are
shorter than a claim takes, it is claimed as many steps earlier as the claim needs
(`claim_is_due`). Claiming only then (not at the start) leaves the queue to idle workers in a
fleet for all but that lead."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from imagesmith import metrics, serving
from imagesmith.engines.base import EngineConfig, EngineJob, GeneratedImage
from imagesmith.generation.jobs import ClaimedJob, Finished, JobQueue
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
STORE_RETRY_FIRST_SECONDS = 0.5
STORE_RETRY_MAX_SECONDS = 8.0
# Batches whose results may still be being stored while the worker claims more. Storing one
# batch takes less than running the next, so this only bites while the store refuses (each
# such batch holds its images in memory while it retries): then the worker stops taking work,
# with at most this many batches' images held, and the one queued behind them.
MAX_STORING = 2
# The next batch is claimed when the steps left would end within this many times the time the
# last claims took, and at the last step at the latest; never more than CLAIM_LEAD_MAX_SECONDS
# ahead, so a slow claim (init images from a slow store) does not hold jobs an idle worker of a
# fleet could take.
CLAIM_LEAD = 2.0
CLAIM_LEAD_MAX_SECONDS = 0.5


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
        dtype=settings.dtype,
        attention=settings.attention,
        channels_last=settings.channels_last,
        compile=settings.compile == "on",
        compile_mode=settings.compile_mode,
        compile_warmup=settings.resolved_compile_warmup,
        compile_warmup_auto=settings.compile_warmup_auto,
        compile_max_graphs=settings.compile_max_graphs,
        threads=settings.torch_threads,
        adaptive_threads=settings.adaptive_threads,
        png_compress_level=settings.png_compress_level,
    )


def engine_job(job: ClaimedJob) -> EngineJob:
    return EngineJob(
        job_id=job.generation_id,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        params=job.params,
        init_image=job.init_image,
    )


@dataclass
class Batch:
    """A batch sent to the child, with the task renewing its jobs' leases."""

    id: str
    jobs: list[ClaimedJob]
    leases: asyncio.Future[None] = field(repr=False)
    claim_ms: float = 0.0  # requeue-expired sweep + claim + init images, before the send


class Worker:
    def __init__(self, runtime: Runtime, worker_id: str | None = None):
        self.rt = runtime
        self.settings = runtime.settings
        self.worker_id = worker_id or (
            f"{socket.gethostname()[:100]}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.queue = JobQueue(runtime, self.worker_id)
        # Not the remote models' jobs: worker/remote.py's RemoteRunner runs those.
        self.remote_models = [spec.id for spec in runtime.registry.remote()]
        self.child = ModelProcess(engine_config(runtime))
        self.state = WorkerState.STARTING
        self.batches_run = 0
        self._storing: set[asyncio.Future[None]] = set()
        self._stop = asyncio.Event()
        self._claim_seconds = 0.0  # what claims that found work took, smoothed

    def _become(self, state: WorkerState) -> None:
        if state is self.state:
            return
        if state not in ALLOWED[self.state]:
            raise RuntimeError(f"worker state {self.state} cannot become {state}")
        log.debug("worker.state worker_id=%s state=%s", self.worker_id, state)
        self.state = state

    # Main loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.started worker_id=%s loop=%s", self.worker_id, serving.loop_name())
        self._stop = stop
        await self.queue.register(socket.gethostname(), os.getpid())
        beating = asyncio.ensure_future(self._beat())
        batch: Batch | None = None
        try:
            if not await self._start_child(stop):
                return
            self._become(WorkerState.IDLE)
            while not stop.is_set():
                if batch is None:
                    await self._room_to_store()
                    batch = await self._claim_and_send()
                if batch is None:
                    await self._idle(stop)
                    continue
                batch = await self._run_until_done_or_stopped(batch, stop)
        finally:
            if batch is not None:  # claimed and queued in the child, not started: hand it back
                await self._hand_back(batch)
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
        work = asyncio.ensure_future(self.rt.notifier.wait_for_work(self.queue.look_due_in()))
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

    async def _claim_and_send(self) -> Batch | None:
        """Claim the next batch and hand it to the child (which queues it behind a running one)."""
        started = time.perf_counter()
        await self.queue.requeue_expired()
        jobs = await self.queue.claim(
            self.settings.worker_batch_size, except_models=self.remote_models
        )
        if not jobs:
            return None
        took = time.perf_counter() - started
        self._claim_seconds = (
            took if not self._claim_seconds else (0.7 * self._claim_seconds + 0.3 * took)
        )
        batch = Batch(
            str(uuid.uuid4()), jobs, asyncio.ensure_future(self._renew_leases(jobs)), took * 1000
        )
        try:
            self.child.send(RunBatch(batch.id, [engine_job(job) for job in jobs]))
        except Exception:  # the child is gone; its restart comes with the current batch's end
            await self._hand_back(batch)
            raise
        return batch

    async def _hand_back(self, batch: Batch) -> None:
        """A batch that never started goes back to the queue, no retry counted."""
        batch.leases.cancel()
        with contextlib.suppress(Exception):
            self.child.send(CancelBatch(batch.id))
        await self.queue.release(batch.jobs, count_retry=False, reason="worker handed it back")

    async def _run_until_done_or_stopped(self, batch: Batch, stop: asyncio.Event) -> Batch | None:
        """A stop request lets the current batch finish; past the grace period it is handed back.
        Returns the next batch if one was claimed and queued in the child meanwhile."""
        running = asyncio.ensure_future(self._run_batch(batch))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not running.done():
            done, _ = await asyncio.wait({running}, timeout=self.settings.shutdown_grace_seconds)
            if not done:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        if running.done() and not running.cancelled():
            if running.exception() is not None:
                log.error(
                    "batch.crashed worker_id=%s error=%r", self.worker_id, running.exception()
                )
                return None
            return running.result()
        return None

    # One batch ---------------------------------------------------------------------------

    async def _run_batch(self, batch: Batch) -> Batch | None:
        """Follow one batch to its end and store its images while the next one runs; returns
        the next batch when it was claimed and queued in the child before this one ended."""
        held = {job.generation_id: job for job in batch.jobs}
        finished: list[tuple[ClaimedJob, list[GeneratedImage]]] = []
        following: asyncio.Task[Batch | None] | None = None

        def claim_following() -> None:
            nonlocal following
            if following is None and not self._stop.is_set() and self._room_for_storing():
                following = asyncio.ensure_future(self._claim_and_send())

        async def next_batch() -> Batch | None:
            if following is None:
                return None
            try:
                return await following
            except Exception as exc:
                log.warning("batch.prefetch_failed worker_id=%s error=%r", self.worker_id, exc)
                return None

        self._become(WorkerState.BUSY)
        try:
            healthy = await self._collect(batch, held, finished, claim_following)
        except asyncio.CancelledError:
            # Shutdown past the grace period: stop the child and hand the jobs back unharmed.
            batch.leases.cancel()
            self.child.kill()
            held.update({job.generation_id: job for job, _ in finished})
            await asyncio.shield(self._give_up(held, following, count_retry=False))
            raise
        except Exception as exc:
            # A bug or an outage in this process: hand the jobs back now rather than at lease
            # expiry, and start from a clean child.
            batch.leases.cancel()
            log.exception("batch.crashed worker_id=%s", self.worker_id)
            self.child.kill()
            held.update({job.generation_id: job for job, _ in finished})
            await self.queue.release(
                held.values(), count_retry=True, reason=f"worker error: {exc!r}"[:300]
            )
            await self._give_up({}, following, count_retry=False)
            await self._wait_for_exit()
            await self._restart_child()
            return None
        following_batch = await next_batch()
        if not healthy and following_batch is not None:
            # The child it was queued in is gone: it never started.
            await self._hand_back(following_batch)
            following_batch = None
        # Store this batch's images while the child denoises the next one.
        task = asyncio.ensure_future(self._store_all(finished, batch.leases))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        self.batches_run += 1
        if self.state is WorkerState.BUSY:
            self._become(WorkerState.IDLE)
        return following_batch

    async def _give_up(
        self,
        held: dict[str, ClaimedJob],
        following: asyncio.Task[Batch | None] | None,
        *,
        count_retry: bool,
    ) -> None:
        """Release what this batch held, and the next batch if one was queued behind it."""
        if held:
            await self.queue.release(
                held.values(), count_retry=count_retry, reason="worker shut down"
            )
        if following is not None:
            with contextlib.suppress(Exception):
                queued = await following
                if queued is not None:
                    await self._hand_back(queued)

    async def _store_all(
        self, finished: list[tuple[ClaimedJob, list[GeneratedImage]]], leases: asyncio.Future[None]
    ) -> None:
        """Store and record a batch's results. What the store or the database refuses is tried
        again, with growing jittered waits, for up to `store_retry_seconds` while the leases
        are renewed: the images are in hand, and a blip should not cost a rerun. What is still
        refused then goes back to the queue with the reason."""
        started = time.perf_counter()
        results = [Finished(job, images) for job, images in finished]
        deadline = time.monotonic() + self.settings.store_retry_seconds
        delay = STORE_RETRY_FIRST_SECONDS
        try:
            while True:
                try:
                    outcomes = await self.queue.succeed_all(results)
                except Exception as error:  # the database: nothing was recorded
                    outcomes = [(result.job, error) for result in results]
                left = deadline - time.monotonic()
                if not outcomes or self._stop.is_set() or left <= 0:
                    break
                # Jittered, so the workers of a fleet spread out; the last try at the deadline.
                wait = min(delay * random.uniform(0.75, 1.25), left)
                log.warning(
                    "generation.store_retry jobs=%d in_s=%.1f error=%r",
                    len(outcomes),
                    wait,
                    outcomes[0][1],
                )
                with contextlib.suppress(TimeoutError):  # a stop cuts the wait short
                    await asyncio.wait_for(self._stop.wait(), wait)
                refused = {job.generation_id for job, _exc in outcomes}
                results = [result for result in results if result.job.generation_id in refused]
                delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)
        finally:
            leases.cancel()
        # Still refused (the S3 client retried each request too): the job goes back now, with
        # the reason, instead of waiting out its lease as if this worker had died.
        for job, exc in outcomes:
            log.error("generation.store_failed generation_id=%s error=%r", job.generation_id, exc)
            with contextlib.suppress(Exception):  # the database too: the lease runs out
                await self.queue.release(
                    [job], count_retry=True, reason=f"storing its images failed: {exc!r}"[:300]
                )
        if finished:
            log.info(
                "batch.stored jobs=%d store_ms=%.1f",
                len(finished),
                (time.perf_counter() - started) * 1000,
            )

    def _room_for_storing(self) -> bool:
        return len(self._storing) < MAX_STORING

    async def _room_to_store(self) -> None:
        """Wait while MAX_STORING batches are still being stored (the store is refusing)."""
        while not self._room_for_storing():
            done, _ = await asyncio.wait(set(self._storing), return_when=asyncio.FIRST_COMPLETED)
            self._storing.difference_update(done)

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
        batch: Batch,
        held: dict[str, ClaimedJob],
        finished: list[tuple[ClaimedJob, list[GeneratedImage]]],
        on_last_step: Callable[[], None],
    ) -> bool:
        """Follow the batch until it ends; finished images are handed back in `finished`.
        False when the child died or hung (it has been restarted) instead of finishing."""
        batch_id = batch.id
        deadline = time.monotonic() + self.settings.job_timeout_seconds
        last_check = time.monotonic()
        # The first progress write comes PROGRESS_INTERVAL into the batch: a batch shorter than
        # that goes from processing (its claim) to success without one, a write saved per job.
        last_progress = time.monotonic()
        stop_sent = False
        stepped: tuple[int, float] | None = None  # the last step seen, and when
        step_seconds: float | None = None  # between two steps, as seen here
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), CANCEL_CHECK_SECONDS)
            message = await self.child.next_message(wait)
            still: set[str] | None = None  # which jobs are still held, when asked
            if isinstance(message, Progress) and message.batch_id == batch_id:
                now = time.monotonic()
                # Timed between steps only: the batch's first message (step 0, the call's start)
                # may have waited behind the last batch's images.
                if stepped is not None and stepped[0] >= 1 and message.step > stepped[0]:
                    step_seconds = (now - stepped[1]) / (message.step - stepped[0])
                stepped = (message.step, now)
                if claim_is_due(message.step, message.total, step_seconds, self._claim_seconds):
                    on_last_step()
                if held and now - last_progress >= PROGRESS_INTERVAL:
                    # The write answers which jobs are still held: the cancel check with it.
                    last_progress = last_check = time.monotonic()
                    still = await self.queue.report_progress(
                        held.values(), message.step, message.total
                    )
            if still is None and held and time.monotonic() - last_check >= CANCEL_CHECK_SECONDS:
                # A batch whose steps come slower than the check (or whose child is quiet).
                last_check = time.monotonic()
                still = await self.queue.still_held(held.values())
            dropped = still is not None and self._drop_cancelled(held, still)
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
                return False
            if isinstance(message, ChildExited):
                await self.queue.release(
                    held.values(),
                    count_retry=True,
                    reason=f"the model process died (exit code {message.exitcode})",
                )
                await self._restart_child()
                return False
            if isinstance(message, Preview) and message.job_id in held:
                await self.queue.store_preview(held[message.job_id], message.index, message.image)
            elif isinstance(message, JobDone) and message.job_id in held:
                finished.append((held.pop(message.job_id), message.images))
            elif isinstance(message, JobFailed) and message.job_id in held:
                await self.queue.fail(held.pop(message.job_id), message.message)
            elif isinstance(message, BatchDone) and message.batch_id == batch_id:
                count_steps(batch.jobs, message.timings.get("pipeline_ms"))
                log.info(
                    "batch.done batch_id=%s jobs=%d claim_ms=%.1f %s",
                    batch_id,
                    len(batch.jobs),
                    batch.claim_ms,
                    " ".join(f"{name}={value:.1f}" for name, value in message.timings.items()),
                )
                if held:
                    await self.queue.release(
                        held.values(), count_retry=True, reason="no result for the job"
                    )
                return True

    @staticmethod
    def _drop_cancelled(held: dict[str, ClaimedJob], still: set[str]) -> int:
        """Forget jobs cancelled (or re-queued) while they ran; their results will be discarded."""
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


def claim_is_due(done: int, total: int, step_seconds: float | None, claim_seconds: float) -> bool:
    """Whether to claim the next batch now, `done` of `total` steps into this one: at its last
    step, or earlier where the steps left take less than CLAIM_LEAD times what a claim takes
    (64 px on a CPU: ~10 ms steps, ~12 ms claims; a claim at the last step often reached the
    child after the batch had ended, and the model waited)."""
    if done >= total - 1:
        return True
    if step_seconds is None:
        return False
    lead = min(CLAIM_LEAD * claim_seconds, CLAIM_LEAD_MAX_SECONDS)
    return (total - done) * step_seconds <= lead


def count_steps(jobs: list[ClaimedJob], pipeline_ms: float | None) -> None:
    """Denoising steps of a finished batch, per image, into the gauges."""
    if not jobs:
        return
    params = jobs[0].params
    images = sum(job.params.num_outputs for job in jobs)
    steps = params.denoising_steps
    metrics.DENOISE_STEPS.labels(params.model_id).inc(steps * images)
    if pipeline_ms:
        metrics.DENOISE_RATE.labels(params.model_id).set(steps / (pipeline_ms / 1000))
