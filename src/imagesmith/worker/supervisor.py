"""The worker loop: claim jobs from the database, run them in the model child, store results.

The database row is the job. A claim is a lease that this loop renews while the child works;
if this process dies, the lease runs out and any worker puts the job back in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.db.base import new_id, utcnow
from imagesmith.generation.repository import Claim, GenerationRepository
from imagesmith.models import Flow, Generation, GenerationStatus, Image, ImageSource
from imagesmith.runtime import Runtime
from imagesmith.storage.base import image_key
from imagesmith.worker.messages import (
    BatchDone,
    CancelBatch,
    ChildConfig,
    ChildExited,
    JobDone,
    JobFailed,
    JobSpec,
    OutputImage,
    Progress,
    RunBatch,
)
from imagesmith.worker.process import ChildStartFailed, ModelProcess
from imagesmith.worker.registry import WorkerRepository

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5
CANCEL_CHECK_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0


@dataclass
class HeldJob:
    claim: Claim
    project_id: str
    org_slug: str
    project_slug: str
    steps: int


class Worker:
    def __init__(self, runtime: Runtime, worker_id: str | None = None):
        self.rt = runtime
        self.settings = runtime.settings
        self.worker_id = worker_id or (
            f"{socket.gethostname()[:100]}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.child = ModelProcess(self._child_config())
        self.batches_run = 0
        self._storing: set[asyncio.Future[None]] = set()

    def _child_config(self) -> ChildConfig:
        return ChildConfig(
            models_dir=str(self.settings.resolved_models_dir),
            device=self.settings.device,
            allow_downloads=self.settings.allow_downloads,
            model_cache_gb=self.settings.model_cache_gb,
            models=[spec.to_dict() for spec in self.rt.registry.all()],
        )

    # Main loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.started worker_id=%s", self.worker_id)
        async with self.rt.db.transaction() as session:
            await WorkerRepository(session).register(
                self.worker_id, socket.gethostname(), os.getpid(), utcnow()
            )
        beating = asyncio.ensure_future(self._beat())
        try:
            if not await self._start_child(stop):
                return
            while not stop.is_set():
                await self._requeue_expired()
                claims = await self._claim()
                if not claims:
                    await self._idle(stop)
                    continue
                await self._run_until_done_or_stopped(claims, stop)
        finally:
            await self._drain_storing()
            beating.cancel()
            await self.child.stop()
            async with self.rt.db.transaction() as session:
                await WorkerRepository(session).stopped(self.worker_id, utcnow())
            log.info("worker.stopped worker_id=%s", self.worker_id)

    async def _beat(self) -> None:
        """Tell readiness this worker is alive, busy or idle."""
        while True:
            try:
                async with self.rt.db.transaction() as session:
                    await WorkerRepository(session).heartbeat(
                        self.worker_id, utcnow(), self.child.device, self.batches_run
                    )
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

    async def _run_until_done_or_stopped(self, claims: list[Claim], stop: asyncio.Event) -> None:
        """A stop request lets the current batch finish; past the grace period it is handed back."""
        batch = asyncio.ensure_future(self._run_batch(claims))
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

    # Queue operations --------------------------------------------------------------------

    async def _claim(self) -> list[Claim]:
        now = utcnow()
        async with self.rt.db.transaction() as session:
            claims = await GenerationRepository(session).claim_next_batch(
                self.worker_id,
                self.settings.worker_batch_size,
                now,
                now + timedelta(seconds=self.settings.lease_seconds),
            )
        for claim in claims:
            log.info(
                "generation.claimed generation_id=%s worker_id=%s",
                claim.generation_id,
                self.worker_id,
            )
            self.rt.notifier.generation_changed(claim.generation_id)
        return claims

    async def _requeue_expired(self) -> None:
        async with self.rt.db.transaction() as session:
            ids = await GenerationRepository(session).requeue_expired(
                utcnow(), self.settings.max_retries
            )
        for generation_id in ids:
            log.warning("generation.lease_expired generation_id=%s", generation_id)
            self.rt.notifier.generation_changed(generation_id)

    async def _release(self, held: dict[str, HeldJob], *, count_retry: bool, reason: str) -> None:
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            for job in held.values():
                status = await repo.release(
                    self.worker_id,
                    job.claim,
                    utcnow(),
                    count_retry=count_retry,
                    max_retries=self.settings.max_retries,
                    reason=reason,
                )
                log.warning(
                    "generation.released generation_id=%s status=%s reason=%s",
                    job.claim.generation_id,
                    status,
                    reason,
                )
        for generation_id in held:
            self.rt.notifier.generation_changed(generation_id)
        self.rt.notifier.work_queued()

    # One batch ---------------------------------------------------------------------------

    async def _run_batch(self, claims: list[Claim]) -> None:
        held, specs = await self._load_jobs(claims)
        if not specs:
            return
        batch_id = str(uuid.uuid4())
        batch_claims = [job.claim for job in held.values()]
        heartbeat = asyncio.ensure_future(self._heartbeat(batch_claims))
        finished: list[tuple[HeldJob, JobDone]] = []
        try:
            self.child.send(RunBatch(batch_id, specs))
            await self._collect(batch_id, held, finished)
        except asyncio.CancelledError:
            # Shutdown past the grace period: stop the child and hand the jobs back unharmed.
            heartbeat.cancel()
            self.child.kill()
            held.update({job.claim.generation_id: job for job, _ in finished})
            await asyncio.shield(self._release(held, count_retry=False, reason="worker shut down"))
            raise
        except Exception as exc:
            # A bug or an outage in this process: hand the jobs back now rather than at lease
            # expiry, and start from a clean child.
            heartbeat.cancel()
            log.exception("batch.crashed worker_id=%s", self.worker_id)
            self.child.kill()
            held.update({job.claim.generation_id: job for job, _ in finished})
            await self._release(held, count_retry=True, reason=f"worker error: {exc!r}"[:300])
            await self._wait_for_exit()
            await self._restart_child()
            return
        # Store this batch's images while the child denoises the next one.
        task = asyncio.ensure_future(self._store_all(finished, heartbeat))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        self.batches_run += 1

    async def _store_all(
        self, finished: list[tuple[HeldJob, JobDone]], heartbeat: asyncio.Future[None]
    ) -> None:
        try:
            for job, done in finished:
                try:
                    await self._succeed(job, done)
                except Exception as exc:  # storage down: the lease runs out, the job runs again
                    log.error(
                        "generation.store_failed generation_id=%s error=%r",
                        job.claim.generation_id,
                        exc,
                    )
        finally:
            heartbeat.cancel()

    async def _drain_storing(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    async def _load_jobs(self, claims: list[Claim]) -> tuple[dict[str, HeldJob], list[JobSpec]]:
        held: dict[str, HeldJob] = {}
        loaded: list[tuple[Generation, Claim]] = []
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            for claim in claims:
                generation = await repo.get_any(claim.generation_id)
                if generation is None:
                    continue
                org_slug, project_slug = await repo.project_slugs(generation.project_id)
                held[claim.generation_id] = HeldJob(
                    claim, generation.project_id, org_slug, project_slug, generation.steps
                )
                loaded.append((generation, claim))
        specs: list[JobSpec] = []
        for generation, claim in loaded:
            init = None
            if generation.init_image_key is not None:
                stored = await self.rt.store.get(generation.init_image_key)
                if stored is None:
                    await self._fail(
                        held.pop(claim.generation_id),
                        "The init image was deleted before the job ran",
                    )
                    continue
                init = stored.data
            specs.append(job_spec(generation, claim, init))
        return held, specs

    async def _heartbeat(self, claims: list[Claim]) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            async with self.rt.db.transaction() as session:
                await GenerationRepository(session).renew_leases(
                    self.worker_id,
                    claims,
                    utcnow() + timedelta(seconds=self.settings.lease_seconds),
                )

    async def _collect(
        self, batch_id: str, held: dict[str, HeldJob], finished: list[tuple[HeldJob, JobDone]]
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
                await self._release(
                    held,
                    count_retry=True,
                    reason=f"the model process hung for {self.settings.job_timeout_seconds:.0f} s",
                )
                await self._restart_child()
                return
            if isinstance(message, ChildExited):
                await self._release(
                    held,
                    count_retry=True,
                    reason=f"the model process died (exit code {message.exitcode})",
                )
                await self._restart_child()
                return
            if isinstance(message, Progress) and message.batch_id == batch_id and held:
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL:
                    last_progress = time.monotonic()
                    await self._progress(held, message.step, message.total)
            elif isinstance(message, JobDone) and message.generation_id in held:
                finished.append((held.pop(message.generation_id), message))
            elif isinstance(message, JobFailed) and message.generation_id in held:
                await self._fail(held.pop(message.generation_id), message.message)
            elif isinstance(message, BatchDone) and message.batch_id == batch_id:
                if held:
                    await self._release(held, count_retry=True, reason="no result for the job")
                return

    async def _drop_cancelled(self, held: dict[str, HeldJob]) -> int:
        """Forget jobs cancelled (or re-queued) while they ran; their results will be discarded."""
        async with self.rt.db.transaction() as session:
            still = await GenerationRepository(session).held_ids(
                self.worker_id, [job.claim for job in held.values()]
            )
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
        await self.child.stop(timeout=1.0)
        stop = asyncio.Event()
        await self._start_child(stop)

    async def _progress(self, held: dict[str, HeldJob], step: int, total: int) -> None:
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            for job in held.values():
                await repo.set_progress(self.worker_id, job.claim, step, total)
        for generation_id in held:
            self.rt.notifier.generation_changed(generation_id)

    async def _succeed(self, job: HeldJob, done: JobDone) -> None:
        claim = job.claim
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get_any(claim.generation_id)
            if generation is None or not await repo.still_held(self.worker_id, claim):
                log.info("generation.result_discarded generation_id=%s", claim.generation_id)
                return
            # Same ids → same keys → same URLs: regenerating in place overwrites the objects.
            known = list(generation.output_image_ids or [])
            if not known and generation.output_image_id:
                known = [generation.output_image_id]
            image_ids = [known[i] if i < len(known) else new_id() for i in range(len(done.images))]
        for image_id, output in zip(image_ids, done.images, strict=True):
            key = image_key(job.org_slug, job.project_slug, image_id)
            await self.rt.store.put(key, output.png, "image/png")
        now = utcnow()
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get_any(claim.generation_id)
            if generation is None or not await repo.still_held(self.worker_id, claim):
                log.info("generation.result_discarded generation_id=%s", claim.generation_id)
                return
            for index, (image_id, output) in enumerate(zip(image_ids, done.images, strict=True)):
                await self._save_image(repo, job, generation, image_id, output, first=index == 0)
            if generation.flow_alias and generation.flow_id:
                await assign_flow_alias(session, generation, image_ids[0])
            started = generation.started_at or now
            await repo.finish(
                self.worker_id,
                claim,
                now,
                status=GenerationStatus.SUCCESS,
                output_image_id=image_ids[0],
                output_image_ids=image_ids,
                processing_time_ms=int((now - started).total_seconds() * 1000),
                progress_step=job.steps,
                progress_total=job.steps,
                error_message=None,
            )
        log.info(
            "generation.succeeded generation_id=%s images=%s",
            claim.generation_id,
            ",".join(image_ids),
        )
        self.rt.notifier.generation_changed(claim.generation_id)

    async def _save_image(
        self,
        repo: GenerationRepository,
        job: HeldJob,
        generation: Generation,
        image_id: str,
        output: OutputImage,
        *,
        first: bool,
    ) -> None:
        digest = hashlib.sha256(output.png).hexdigest()
        image = await repo.image(job.project_id, image_id)
        if image is not None:
            image.width, image.height = output.width, output.height
            image.file_size, image.sha256, image.updated_at = len(output.png), digest, utcnow()
            return
        alias = generation.alias if first else None
        if alias and await repo.image_by_alias(job.project_id, alias) is not None:
            log.warning("alias.taken alias=%s generation_id=%s", alias, generation.id)
            alias = None
        await repo.add_image(
            Image(
                id=image_id,
                project_id=job.project_id,
                generation_id=generation.id,
                flow_id=generation.flow_id,
                storage_key=image_key(job.org_slug, job.project_slug, image_id),
                mime_type="image/png",
                width=output.width,
                height=output.height,
                file_size=len(output.png),
                sha256=digest,
                source=ImageSource.GENERATED,
                alias=alias,
                meta={},
            )
        )

    async def _fail(self, job: HeldJob, message: str) -> None:
        now = utcnow()
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get_any(job.claim.generation_id)
            started = (generation.started_at if generation else None) or now
            await repo.finish(
                self.worker_id,
                job.claim,
                now,
                status=GenerationStatus.FAILED,
                error_message=message,
                processing_time_ms=int((now - started).total_seconds() * 1000),
            )
        log.warning("generation.failed generation_id=%s error=%s", job.claim.generation_id, message)
        self.rt.notifier.generation_changed(job.claim.generation_id)


def job_spec(generation: Generation, claim: Claim, init_image: bytes | None = None) -> JobSpec:
    return JobSpec(
        generation_id=generation.id,
        job_version=claim.job_version,
        model_id=generation.model_id,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        width=generation.width,
        height=generation.height,
        steps=generation.steps,
        guidance_scale=generation.guidance_scale,
        scheduler=generation.scheduler,
        seed=generation.seed,
        num_outputs=generation.num_outputs,
        init_image=init_image,
        prompt_strength=generation.prompt_strength,
    )


async def assign_flow_alias(session: AsyncSession, generation: Generation, image_id: str) -> None:
    assert generation.flow_id is not None and generation.flow_alias is not None
    flow = await session.get(Flow, generation.flow_id)
    if flow is None:
        flow = Flow(id=generation.flow_id, project_id=generation.project_id, aliases={}, meta={})
        session.add(flow)
    flow.aliases = {**(flow.aliases or {}), generation.flow_alias: image_id}
