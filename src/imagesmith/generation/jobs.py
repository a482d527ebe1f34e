"""The job side of the core: what a worker does to the queue (claim, renew, release) and the
outcomes it reports (succeeded with these images, failed with this message).

The worker keeps processes, leases and timers; every rule about a job's state, its image rows,
its flow alias and its credits lives here. Each method is one short transaction, and wake-ups
go out after it commits."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith import metrics
from imagesmith.catalog.params import EngineParams
from imagesmith.db.base import new_id, utcnow
from imagesmith.generation.announce import announce
from imagesmith.generation.repository import Claim, GenerationRepository
from imagesmith.generation.workers import WorkerRepository
from imagesmith.image.repository import ImageRepository
from imagesmith.image.service import ensure_flow
from imagesmith.limits.credits import Credits
from imagesmith.models import Generation, GenerationStatus, Image, ImageSource
from imagesmith.runtime import Runtime
from imagesmith.storage.base import delete_quietly, image_key, preview_key
from imagesmith.webhooks import events
from imagesmith.webhooks.outbox import targets_for

log = logging.getLogger(__name__)


class ImageBytes(Protocol):
    """One encoded output, as an engine hands it back."""

    @property
    def png(self) -> bytes: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds, with everything the engine needs to run it."""

    claim: Claim
    project_id: str
    org_slug: str
    project_slug: str
    prompt: str
    negative_prompt: str | None
    params: EngineParams
    init_image: bytes | None
    # The generation's output image ids when it was claimed: a re-run in place writes under
    # them (same ids, same URLs); a first run has none.
    outputs: tuple[str, ...] = ()
    # Whether a webhook target wanted generation.progress when it was claimed: progress writes
    # announce only these (each announcement reads the job's row).
    progress_hooked: bool = False

    @property
    def generation_id(self) -> str:
        return self.claim.generation_id


@dataclass(frozen=True)
class Finished:
    """A job the engine has drawn: its images, and what to merge into its record's meta."""

    job: ClaimedJob
    images: Sequence[ImageBytes]
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stored:
    """A finished job whose images are in the store, under these ids and keys."""

    result: Finished
    image_ids: list[str]
    keys: list[str]
    digests: list[str]  # each image's SHA-256, hex


class JobQueue:
    """One worker's handle on the queue."""

    def __init__(self, runtime: Runtime, worker_id: str):
        self.rt = runtime
        self.worker_id = worker_id
        self.settings = runtime.settings
        self._progress_sent: dict[str, float] = {}  # generation id → monotonic time
        self._next_expiry_check = 0.0  # monotonic time of the next look for expired leases
        # The last look for pending work that found none: (work heard then, the filter), and
        # until when (monotonic) a claim with nothing heard since may skip its look.
        self._found_none: tuple[object, ...] | None = None
        self._found_none_until = 0.0

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.lease_seconds)

    # Presence -----------------------------------------------------------------------------

    async def register(self, hostname: str, pid: int) -> None:
        """Announce this worker; a database that is briefly busy at start-up is waited out
        (a worker that died of one here would never run a job)."""
        delay = 0.25
        for attempt in range(8):
            try:
                async with self.rt.db.transaction() as session:
                    await WorkerRepository(session).register(
                        self.worker_id, hostname, pid, utcnow()
                    )
                return
            except Exception as exc:
                if attempt == 7:
                    raise
                log.warning("worker.register_retry worker_id=%s error=%r", self.worker_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def beat(self, device: str | None, batches_run: int) -> None:
        async with self.rt.db.transaction() as session:
            await WorkerRepository(session).heartbeat(self.worker_id, utcnow(), device, batches_run)

    async def stopped(self) -> None:
        async with self.rt.db.transaction() as session:
            await WorkerRepository(session).stopped(self.worker_id, utcnow())

    # Claim, renew, release ---------------------------------------------------------------

    async def claim(
        self,
        limit: int,
        model_ids: Collection[str] | None = None,
        except_models: Collection[str] = (),
    ) -> list[ClaimedJob]:
        """Take up to `limit` compatible jobs (only for `model_ids` when given, none for
        `except_models`); a job whose init image is gone fails here."""
        # A look first, in a read: most claims find nothing (the worker asks after every
        # batch, and ahead of the last step), and on SQLite a write transaction queues behind
        # every other writer. Not even a look when the last one found nothing less than
        # poll_seconds ago and no work was announced since, in a process that hears every
        # announcement (a missed one costs at most poll_seconds, as an idle worker's does).
        heard = self.rt.notifier.work_heard()
        look = (
            heard,
            None if model_ids is None else frozenset(model_ids),
            frozenset(except_models),
        )
        if (
            heard is not None
            and look == self._found_none
            and time.monotonic() < self._found_none_until
        ):
            return []
        async with self.rt.db.read() as session:
            if not await GenerationRepository(session).any_pending(model_ids, except_models):
                self._found_none = look
                self._found_none_until = time.monotonic() + self.settings.poll_seconds
                return []
        now = utcnow()
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            claims = await repo.claim_next_batch(
                self.worker_id, limit, now, self._lease_until(now), model_ids, except_models
            )
            rows: list[tuple[Claim, Generation, str, str]] = []
            slugs: dict[str, tuple[str, str]] = {}  # a batch is mostly one project's jobs
            hooks = False
            progress_hooked: set[str] = set()
            claimed = await repo.held_rows(self.worker_id, claims)  # read after the claim
            for claim in claims:
                generation = claimed.get(claim.generation_id)
                if generation is not None:
                    project_id = generation.project_id
                    if project_id not in slugs:
                        slugs[project_id] = await repo.project_slugs(project_id)
                    rows.append((claim, generation, *slugs[project_id]))
                    hooks |= await announce(
                        self.rt, session, claim.generation_id, events.STARTED, fresh=generation
                    )
                    # The project's endpoints are read once a transaction (targets_for).
                    if await targets_for(session, generation, events.PROGRESS):
                        progress_hooked.add(claim.generation_id)
        if hooks:
            self.rt.notifier.webhooks_queued()
        for claim in claims:
            log.info(
                "generation.claimed generation_id=%s worker_id=%s",
                claim.generation_id,
                self.worker_id,
            )
            self.rt.notifier.generation_progressed(claim.generation_id)
        jobs: list[ClaimedJob] = []
        for _claim, generation, _org, _project in rows:
            if generation.job_version == 1 and generation.retry_count == 0:  # a first run
                waited = (now - generation.created_at).total_seconds()
                metrics.QUEUE_WAIT.labels(generation.model_id).observe(max(waited, 0.0))
        for claim, generation, org_slug, project_slug in rows:
            job = ClaimedJob(
                claim,
                generation.project_id,
                org_slug,
                project_slug,
                generation.prompt,
                generation.negative_prompt,
                generation.params,
                None,
                tuple(generation.output_ids()),
                claim.generation_id in progress_hooked,
            )
            if generation.init_image_key is not None:
                stored = await self.rt.store.get(generation.init_image_key)
                if stored is None:
                    await self.fail(job, "The init image was deleted before the job ran")
                    continue
                job = dataclasses.replace(job, init_image=stored.data)
            jobs.append(job)
        return jobs

    def look_due_in(self) -> float:
        """Seconds until a claim looks for work whatever was announced: an idle worker waits
        for an announcement at most this long (a claim that skipped its look must not add
        another poll_seconds to a job nobody announced)."""
        return min(self.settings.poll_seconds, max(0.0, self._found_none_until - time.monotonic()))

    async def renew(self, jobs: Iterable[ClaimedJob]) -> None:
        async with self.rt.db.transaction() as session:
            await GenerationRepository(session).renew_leases(
                self.worker_id, [job.claim for job in jobs], self._lease_until(utcnow())
            )

    async def report_progress(self, jobs: Iterable[ClaimedJob], step: int, total: int) -> set[str]:
        """Write a running batch's step; returns the ids of the jobs still held, so a progress
        write is also the batch's cancel check."""
        jobs = list(jobs)
        # generation.progress for those who asked (their targets when the job was claimed), at
        # most one per webhook_progress_seconds.
        clock = time.monotonic()
        every = self.settings.webhook_progress_seconds
        hooked = [
            job
            for job in jobs
            if job.progress_hooked
            and step < total
            and clock - self._progress_sent.get(job.generation_id, 0.0) >= every
        ]
        hooks = False
        async with self.rt.db.transaction() as session:
            held = await GenerationRepository(session).set_progress(
                self.worker_id, [job.claim for job in jobs], step, total
            )
            for job in hooked:
                if job.generation_id in held:
                    self._progress_sent[job.generation_id] = clock
                    hooks |= await announce(self.rt, session, job.generation_id, events.PROGRESS)
        for job in jobs:
            if job.generation_id in held:
                self.rt.notifier.generation_progressed(job.generation_id)
        if hooks:
            self.rt.notifier.webhooks_queued()
        return held

    async def store_preview(self, job: ClaimedJob, index: int, image: ImageBytes) -> None:
        """Keep a partial image where streaming readers find it (`previews_ready` counts them).
        A preview is a courtesy: failing to store one never fails the job."""
        key = preview_key(job.org_slug, job.project_slug, job.generation_id, index)
        try:
            async with self.rt.db.read() as session:
                if not await GenerationRepository(session).still_held(self.worker_id, job.claim):
                    return  # cancelled, deleted or re-queued: nobody waits for this preview
            await self.rt.store.put(key, image.png, "image/png")
            async with self.rt.db.transaction() as session:
                counted = await GenerationRepository(session).set_previews_ready(
                    self.worker_id, job.claim, index + 1
                )
            if not counted:  # lost the job between the check and the write
                await delete_quietly(self.rt.store, [key])
        except Exception as exc:
            log.warning("preview.store_failed generation_id=%s error=%r", job.generation_id, exc)
            return
        if counted:
            self.rt.notifier.generation_progressed(job.generation_id)

    async def still_held(self, jobs: Iterable[ClaimedJob]) -> set[str]:
        """Ids of the jobs this worker still holds (not cancelled, not re-queued meanwhile)."""
        async with self.rt.db.read() as session:
            return await GenerationRepository(session).held_ids(
                self.worker_id, [job.claim for job in jobs]
            )

    async def release(self, jobs: Iterable[ClaimedJob], *, count_retry: bool, reason: str) -> None:
        """Hand jobs back to the queue (a job out of retries fails, and is refunded)."""
        claims = [(self.worker_id, job.claim) for job in jobs]
        async with self.rt.db.transaction() as session:
            hooks = await self._release(
                session, claims, count_retry=count_retry, reason=lambda _: reason
            )
        self._announce_released(claims, hooks)

    async def requeue_expired(self) -> None:
        """Jobs whose worker stopped renewing its lease go back to pending (or fail).

        Called before every claim, it looks at most a few times a lease (a lease is seconds
        long), and in a read: only when something expired does it open a write transaction."""
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + min(1.0, self.settings.lease_seconds / 4)
        async with self.rt.db.read() as session:
            if not await GenerationRepository(session).any_expired(utcnow()):
                return
        async with self.rt.db.transaction() as session:
            expired = await GenerationRepository(session).expired_claims(utcnow())
            for _worker_id, claim in expired:
                log.warning("generation.lease_expired generation_id=%s", claim.generation_id)
            hooks = await self._release(
                session,
                expired,
                count_retry=True,
                reason=lambda worker: (
                    f"worker {worker} stopped renewing its lease (crashed or lost)"
                ),
            )
        if expired:
            self._announce_released(expired, hooks)

    async def _release(
        self,
        session: AsyncSession,
        claims: list[tuple[str, Claim]],
        *,
        count_retry: bool,
        reason: Callable[[str], str],
    ) -> bool:
        """Release each claim; True when a webhook delivery was written (a job failed)."""
        repo = GenerationRepository(session)
        hooks = False
        for worker_id, claim in claims:
            status = await repo.release(
                worker_id,
                claim,
                utcnow(),
                count_retry=count_retry,
                max_retries=self.settings.max_retries,
                reason=reason(worker_id),
            )
            if status is GenerationStatus.FAILED:
                generation = await repo.get_any(claim.generation_id)
                if generation is not None:
                    await Credits(session).refund_run(generation)
                    metrics.JOBS.labels(generation.model_id, "failed").inc()
                hooks |= await announce(self.rt, session, claim.generation_id, events.FAILED)
            log.warning(
                "generation.released generation_id=%s status=%s reason=%s",
                claim.generation_id,
                status,
                reason(worker_id),
            )
        return hooks

    def _announce_released(self, claims: list[tuple[str, Claim]], hooks: bool) -> None:
        for _worker_id, claim in claims:
            self.rt.notifier.generation_changed(claim.generation_id)
            self._progress_sent.pop(claim.generation_id, None)
        self.rt.notifier.work_queued()
        if hooks:
            self.rt.notifier.webhooks_queued()

    # Outcomes -----------------------------------------------------------------------------

    async def succeed(
        self,
        job: ClaimedJob,
        images: Sequence[ImageBytes],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """One job's success (a remote provider's); raises what storing it raised."""
        for _job, error in await self.succeed_all([Finished(job, images, meta)]):
            raise error

    async def succeed_all(self, results: Sequence[Finished]) -> list[tuple[ClaimedJob, Exception]]:
        """Store a batch's images under the generations' output ids, then record the successes
        in one write transaction; returns the jobs whose images could not be stored or recorded,
        with why. A result for a job that was cancelled or re-queued meanwhile is discarded.

        One write and one commit for the whole batch: a job at a time took ~20 ms of this process
        a job (two transactions and their round trips), more than a 64 px batch of 16 spent in
        the model (bench/RESULTS.md). If the batch's write fails, each job is written alone, so
        one bad row fails only its own job. No look before: the output ids are the claim's, and
        the write checks that this attempt still holds each job (a read here cost ~2.7 ms of a
        lone client's request, bench/RESULTS.md, thirteenth session)."""
        failed: list[tuple[ClaimedJob, Exception]] = []
        # Same ids → same URLs. The bytes go under this attempt's own keys; the rows point at
        # them only if this attempt still holds the job when its success is recorded.
        attempt = secrets.token_hex(4)
        # Hashed before the write transaction, beside this loop (hashlib lets go of the GIL):
        # a 1024 px PNG takes ~1.7 ms, which inside the write held SQLite's lock.
        digests = await asyncio.to_thread(
            lambda: [[hashlib.sha256(i.png).hexdigest() for i in r.images] for r in results]
        )
        todo: list[Stored] = []
        for result, hashes in zip(results, digests, strict=True):
            job = result.job
            ids = output_slots(job.outputs, len(result.images))
            keys = [image_key(job.org_slug, job.project_slug, i, attempt) for i in ids]
            todo.append(Stored(result, ids, keys, hashes))
        puts = await asyncio.gather(*(self._put(stored) for stored in todo), return_exceptions=True)
        stored_ok: list[Stored] = []
        for stored, outcome in zip(todo, puts, strict=True):
            if isinstance(outcome, Exception):
                failed.append((stored.result.job, outcome))
                await delete_quietly(self.rt.store, stored.keys)
            else:
                stored_ok.append(stored)
        if not stored_ok:
            return failed
        now = utcnow()
        try:
            async with self.rt.db.transaction() as session:
                recorded = await self._record_all(session, stored_ok, now)
        except Exception as exc:  # one bad row: each job alone, so it fails only its own
            log.warning("generation.batch_record_failed jobs=%d error=%r", len(stored_ok), exc)
            recorded = []
            for stored in stored_ok:
                try:
                    async with self.rt.db.transaction() as session:
                        recorded += await self._record_all(session, [stored], now)
                except Exception as alone:
                    failed.append((stored.result.job, alone))
                    await delete_quietly(self.rt.store, stored.keys)
        hooks = False
        for stored, generation, replaced, hooked in recorded:
            job = stored.result.job
            hooks |= hooked
            self._progress_sent.pop(job.generation_id, None)
            # After commit: the objects nothing points at any more (the previous run's, or ours
            # if this attempt lost the job meanwhile).
            await delete_quietly(self.rt.store, stored.keys if generation is None else replaced)
            if generation is None:
                continue
            log.info(
                "generation.succeeded generation_id=%s images=%s",
                job.generation_id,
                ",".join(stored.image_ids),
            )
            metrics.JOBS.labels(job.params.model_id, "success").inc()
            metrics.JOB_DURATION.labels(job.params.model_id).observe(
                elapsed_ms(generation, now) / 1000
            )
            self.rt.notifier.generation_changed(job.generation_id)
        if hooks:
            self.rt.notifier.webhooks_queued()
        return failed

    async def _put(self, stored: Stored) -> None:
        for key, output in zip(stored.keys, stored.result.images, strict=True):
            await self.rt.store.put(key, output.png, "image/png")

    async def _record_all(
        self, session: AsyncSession, batch: list[Stored], now: datetime
    ) -> list[tuple[Stored, Generation | None, list[str], bool]]:
        """Each job's terminal write, its image rows and its event, in the caller's transaction:
        (the job, its generation or None when this attempt lost it, the keys its images pointed
        at before, whether a webhook delivery was written)."""
        repo = GenerationRepository(session)
        images_repo = ImageRepository(session)
        held = await repo.held_rows(self.worker_id, [stored.result.job.claim for stored in batch])
        recorded: list[tuple[Stored, Generation | None, list[str], bool]] = []
        for stored in batch:
            job, meta = stored.result.job, stored.result.meta
            generation = held.get(job.generation_id)
            extra = {"meta": {**(generation.meta or {}), **meta}} if meta and generation else {}
            # The terminal write first: it is conditional on this attempt still holding the job
            # (and on PostgreSQL locks the row), so a cancel that committed first wins and
            # nothing of this attempt is written.
            if generation is not None and not await repo.finish(
                self.worker_id,
                job.claim,
                now,
                **extra,
                status=GenerationStatus.SUCCESS,
                output_image_id=stored.image_ids[0],
                output_image_ids=stored.image_ids,
                processing_time_ms=elapsed_ms(generation, now),
                progress_step=job.params.steps,
                progress_total=job.params.steps,
                error_message=None,
            ):
                generation = None
            if generation is None:
                log.info("generation.result_discarded generation_id=%s", job.generation_id)
                recorded.append((stored, None, [], False))
                continue
            replaced: list[str] = []
            for index, (image_id, key, output, digest) in enumerate(
                zip(
                    stored.image_ids,
                    stored.keys,
                    stored.result.images,
                    stored.digests,
                    strict=True,
                )
            ):
                old = await self._record_image(
                    images_repo, job, generation, image_id, key, output, digest, index
                )
                if old is not None and old != key:
                    replaced.append(old)
            missing = generation.num_outputs - len(stored.image_ids)
            if missing > 0:  # a provider that sent fewer images than asked: those come back
                await Credits(session).refund_part(generation, missing)
            if generation.flow_alias and generation.flow_id:
                flow = await ensure_flow(images_repo, generation.project_id, generation.flow_id)
                flow.aliases = {**(flow.aliases or {}), generation.flow_alias: stored.image_ids[0]}
            hooked = await announce(self.rt, session, job.generation_id, events.COMPLETED)
            recorded.append((stored, generation, replaced, hooked))
        return recorded

    async def _record_image(
        self,
        repo: ImageRepository,
        job: ClaimedJob,
        generation: Generation,
        image_id: str,
        key: str,
        output: ImageBytes,
        digest: str,
        index: int,
    ) -> str | None:
        """Create or update the image row; returns the key it pointed at before (a re-run)."""
        # Only an id the generation already had (a re-run in place) can have a row: a new one
        # was made for this run.
        rerun = image_id in generation.output_ids()
        image = await repo.get(job.project_id, image_id) if rerun else None
        if image is not None:  # re-run in place: same row and URL, new content and key
            old = image.storage_key
            image.width, image.height = output.width, output.height
            image.file_size, image.sha256, image.updated_at = len(output.png), digest, utcnow()
            image.storage_key = key
            return old
        alias = generation.alias if index == 0 else None
        if alias and await repo.by_alias(job.project_id, alias) is not None:
            log.warning("alias.taken alias=%s generation_id=%s", alias, generation.id)
            alias = None
        await repo.add(
            Image(
                id=image_id,
                project_id=job.project_id,
                generation_id=generation.id,
                flow_id=generation.flow_id,
                storage_key=key,
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
        return None

    async def fail(self, job: ClaimedJob, message: str) -> None:
        """A failed generation is data: status failed, the message, and its credits back."""
        now = utcnow()
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get_any(job.generation_id)
            finished = await repo.finish(
                self.worker_id,
                job.claim,
                now,
                status=GenerationStatus.FAILED,
                error_message=message,
                processing_time_ms=elapsed_ms(generation, now),
            )
            hooks = False
            if finished and generation is not None:
                await Credits(session).refund_run(generation)
                hooks = await announce(self.rt, session, job.generation_id, events.FAILED)
                metrics.JOBS.labels(job.params.model_id, "failed").inc()
        log.warning("generation.failed generation_id=%s error=%s", job.generation_id, message)
        self._progress_sent.pop(job.generation_id, None)
        self.rt.notifier.generation_changed(job.generation_id)
        if hooks:
            self.rt.notifier.webhooks_queued()


def output_slots(known: Sequence[str], count: int) -> list[str]:
    """The image ids a run writes: the generation's existing outputs first (a re-run keeps its
    ids, keys and URLs), new ids for any beyond them."""
    return [known[i] if i < len(known) else new_id() for i in range(count)]


def elapsed_ms(generation: Generation | None, now: datetime) -> int:
    started = (generation.started_at if generation else None) or now
    return int((now - started).total_seconds() * 1000)
