"""Every query on generations, including the queue: claim, lease, release and finish."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.catalog.params import EngineParams
from imagesmith.db.base import as_utc
from imagesmith.errors import ValidationFailed
from imagesmith.generation.schemas import ListFilter, OutputFilter
from imagesmith.models import Generation, GenerationStatus, Image, Organization, Project

PENDING = GenerationStatus.PENDING
CANDIDATES = 16  # head candidates to try when other workers hold the first ones
PROCESSING = GenerationStatus.PROCESSING

# The reads every GET, long poll and create makes, built once: building a statement and its
# cache key costs more CPU than SQLAlchemy's whole execution of a built one (bench/RESULTS.md).
_ONE = (
    Generation.id == bindparam("generation_id"),
    Generation.project_id == bindparam("project_id"),
)
GET = select(Generation).where(*_ONE)
GET_LOCKED = GET.with_for_update()
STATUS_OF = select(Generation.status).where(*_ONE)
PROJECT_CARD = (
    select(Organization.slug, Project.slug, Project.credit_balance)
    .join(Project, Project.organization_id == Organization.id)
    .where(Project.id == bindparam("project_id"))
)


@dataclass(frozen=True)
class Claim:
    """A job as one worker holds it: a finished result counts only if the version still matches."""

    generation_id: str
    job_version: int


def lease_ran_out(now: datetime) -> Any:
    """Running jobs held by a worker whose lease ended before `now`."""
    return and_(
        Generation.status == PROCESSING,
        Generation.worker_id.is_not(None),
        Generation.lease_expires_at < now,
    )


def model_filter(
    model_ids: Collection[str] | None, except_models: Collection[str]
) -> tuple[Any, ...]:
    """`model_ids`: only these models' jobs (when given); `except_models`: none of these."""
    only: tuple[Any, ...] = ()
    if model_ids is not None:
        only += (Generation.model_id.in_(list(model_ids)),)
    if except_models:
        only += (Generation.model_id.not_in(list(except_models)),)
    return only


class GenerationRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    # Records ------------------------------------------------------------------------------

    async def add(self, generation: Generation) -> None:
        self.session.add(generation)
        await self.session.flush()

    async def get(
        self, project_id: str, generation_id: str, *, lock: bool = False
    ) -> Generation | None:
        """`lock`: hold the row until commit (PostgreSQL), for writes that depend on its status:
        a worker's success must not land between our read and our write. SQLite serializes
        write transactions already."""
        one = {"generation_id": generation_id, "project_id": project_id}
        return (await self.session.execute(GET_LOCKED if lock else GET, one)).scalar_one_or_none()

    async def status_of(self, project_id: str, generation_id: str) -> GenerationStatus | None:
        """Just the status (what a waiter checks on each wake-up), None when it is gone."""
        one = {"generation_id": generation_id, "project_id": project_id}
        return (await self.session.execute(STATUS_OF, one)).scalar_one_or_none()

    async def get_any(self, generation_id: str) -> Generation | None:
        return await self.session.get(Generation, generation_id)

    async def by_idempotency_key(self, project_id: str, key: str) -> Generation | None:
        result = await self.session.execute(
            select(Generation).where(
                Generation.project_id == project_id, Generation.idempotency_key == key
            )
        )
        return result.scalar_one_or_none()

    async def page(self, project_id: str, filters: ListFilter) -> tuple[list[Generation], int]:
        conditions: list[Any] = [Generation.project_id == project_id]
        if filters.status is not None:
            conditions.append(Generation.status == filters.status)
        if filters.flow_id is not None:
            conditions.append(Generation.flow_id == filters.flow_id)
        if not filters.include_deleted:
            conditions.append(Generation.deleted_at.is_(None))
        if filters.end_user_id is not None:
            conditions.append(Generation.end_user_id == filters.end_user_id)
        if filters.public_only:
            conditions.append(Generation.is_public.is_(True))
        total = (
            await self.session.execute(select(func.count(Generation.id)).where(*conditions))
        ).scalar_one()
        rows = await self.session.execute(
            select(Generation)
            .where(*conditions)
            .order_by(Generation.created_at.desc(), Generation.id.desc())
            .limit(filters.limit)
            .offset(filters.offset)
        )
        return list(rows.scalars()), int(total)

    async def outputs_page(
        self, project_id: str, filters: OutputFilter, cursor: str | None, per_page: int
    ) -> tuple[list[tuple[Image, Generation]], int, str | None]:
        """Generated images with their generation; the cursor is `<created_at>|<image id>`."""
        conditions: list[Any] = [
            Image.project_id == project_id,
            Image.deleted_at.is_(None),
            Generation.status == GenerationStatus.SUCCESS,
        ]
        for column, values in (
            (Generation.model_id, filters.model_ids),
            (Generation.scheduler, filters.scheduler_ids),
            (Generation.width, filters.widths),
            (Generation.height, filters.heights),
            (Generation.steps, filters.steps),
            (Generation.guidance_scale, filters.guidance_scales),
        ):
            if values:
                conditions.append(column.in_(values))
        if filters.start is not None:
            conditions.append(Image.created_at >= as_utc(filters.start, "start_dt"))
        if filters.end is not None:
            conditions.append(Image.created_at <= as_utc(filters.end, "end_dt"))
        joined = select(Image, Generation).join(Generation, Generation.id == Image.generation_id)
        total = (
            await self.session.execute(
                select(func.count(Image.id))
                .join(Generation, Generation.id == Image.generation_id)
                .where(*conditions)
            )
        ).scalar_one()
        if cursor:
            stamp, _, last_id = cursor.partition("|")
            try:
                moment = as_utc(datetime.fromisoformat(stamp.replace("Z", "+00:00")), "cursor")
            except ValueError:
                raise ValidationFailed(f"cursor '{cursor}' is not one this server issued") from None
            if filters.ascending:
                conditions.append(
                    or_(
                        Image.created_at > moment,
                        and_(Image.created_at == moment, Image.id > last_id),
                    )
                )
            else:
                conditions.append(
                    or_(
                        Image.created_at < moment,
                        and_(Image.created_at == moment, Image.id < last_id),
                    )
                )
        order = (
            (Image.created_at.asc(), Image.id.asc())
            if filters.ascending
            else (Image.created_at.desc(), Image.id.desc())
        )
        rows = (
            await self.session.execute(
                joined.where(*conditions).order_by(*order).limit(per_page + 1)
            )
        ).all()
        page = [(row[0], row[1]) for row in rows[:per_page]]
        next_cursor = None
        if len(rows) > per_page and page:
            last = page[-1][0]
            next_cursor = f"{last.created_at.isoformat()}|{last.id}"
        return page, int(total), next_cursor

    async def delete_generation(self, generation: Generation) -> None:
        await self.session.execute(delete(Generation).where(Generation.id == generation.id))

    async def project_slugs(self, project_id: str) -> tuple[str, str]:
        org_slug, project_slug, _balance = await self.project_card(project_id)
        return org_slug, project_slug

    async def project_card(self, project_id: str) -> tuple[str, str, int | None]:
        """Its organization's slug, its slug and its credit balance (None: unlimited): what a
        generation's view shows of its project, in one query."""
        row = (await self.session.execute(PROJECT_CARD, {"project_id": project_id})).one()
        return str(row[0]), str(row[1]), row[2]

    # Queue --------------------------------------------------------------------------------

    async def claim_next_batch(
        self,
        worker_id: str,
        limit: int,
        now: datetime,
        lease_until: datetime,
        model_ids: Collection[str] | None = None,
        except_models: Collection[str] = (),
    ) -> list[Claim]:
        """Atomically move compatible pending jobs, up to `limit` images in all (the head job
        alone may have more), to processing for this worker: memory and time on the device
        grow with the images in a call, not with the jobs.

        Fair across projects: jobs are taken round-robin by each project's queue position
        (every project's 1st job, then every project's 2nd, …), so one tenant's flood never
        starves another's job. The head job picks the batch key (`EngineParams.BATCH_KEY`);
        batch-mates are taken in the same fair order.
        PostgreSQL skips rows other workers hold locked; SQLite runs this under its write lock.
        `model_ids`: only jobs for these models (the remote providers' with a free slot);
        `except_models`: none of these (a local worker leaves the remote models' jobs alone,
        and still takes a job whose model left the registry, to fail it with a message)."""
        only = model_filter(model_ids, except_models)
        candidates = await self._fair_order(*only, limit=CANDIDATES)
        head = await self._lock_first(candidates)
        if head is None:
            return []
        # Batch-mates agree on every batch-key column; None (txt2img strength) matches None.
        same_key = [
            getattr(Generation, name).is_(None)
            if getattr(head, name) is None
            else getattr(Generation, name) == getattr(head, name)
            for name in EngineParams.BATCH_KEY
        ]
        # The head stays in the ranking (it is still pending here) so positions stay true.
        # A lone candidate has no batch-mates (each would have been a candidate: its model is
        # the head's): a lone client's claim skips this ranking.
        alone = len(candidates) == 1
        ranked_mates = (
            await self._fair_order(*same_key, limit=limit * 4) if limit > 1 and not alone else []
        )
        mates = [i for i in ranked_mates if i != head.id]
        lockable: dict[str, int] = {}  # id → its images
        if mates:
            rows = await self.session.execute(
                select(Generation.id, Generation.num_outputs)
                .where(Generation.id.in_(mates), Generation.status == PENDING)
                .with_for_update(skip_locked=True)
            )
            lockable = dict(rows.tuples().all())
        # Update exactly the locked rows: an `IN (subquery LIMIT n)` can be re-evaluated by
        # PostgreSQL's planner and claim more than n rows.
        batch_ids, images = [head.id], head.num_outputs
        for mate in (i for i in mates if i in lockable):
            if images + lockable[mate] > limit:
                break  # the fair order holds: no smaller job jumps ahead to fill the room
            batch_ids.append(mate)
            images += lockable[mate]
        result = await self.session.execute(
            update(Generation)
            .where(Generation.id.in_(batch_ids), Generation.status == PENDING)
            .values(
                status=PROCESSING,
                worker_id=worker_id,
                lease_expires_at=lease_until,
                started_at=now,
                updated_at=now,
                progress_step=0,
                progress_total=Generation.steps,
                previews_ready=0,
                error_message=None,
            )
            .returning(Generation.id, Generation.job_version)
            .execution_options(synchronize_session=False)
        )
        versions = dict(result.tuples().all())
        return [Claim(i, versions[i]) for i in batch_ids if i in versions]

    async def _fair_order(self, *conditions: Any, limit: int) -> list[str]:
        """Pending job ids ordered by their position in their project's queue, then age."""
        position = (
            func.row_number()
            .over(
                partition_by=Generation.project_id,
                order_by=(Generation.created_at, Generation.id),
            )
            .label("position")
        )
        # Jobs already running count toward their project's position: a project with work in
        # flight waits behind one that has none.
        ranked = (
            select(Generation.id, Generation.status, Generation.created_at, position)
            .where(Generation.status.in_([PENDING, PROCESSING]), *conditions)
            .subquery()
        )
        rows = await self.session.execute(
            select(ranked.c.id)
            .where(ranked.c.status == PENDING)
            .order_by(ranked.c.position, ranked.c.created_at, ranked.c.id)
            .limit(limit)
        )
        return list(rows.scalars())

    async def _lock_first(self, candidate_ids: list[str]) -> Generation | None:
        """The first candidate that no other worker holds, locked for this transaction."""
        for candidate in candidate_ids:
            row = (
                await self.session.execute(
                    select(Generation)
                    .where(Generation.id == candidate, Generation.status == PENDING)
                    .with_for_update(skip_locked=True)
                )
            ).scalar_one_or_none()
            if row is not None:
                return row
        return None

    def _held(self, worker_id: str, claim: Claim) -> Any:
        return and_(
            Generation.id == claim.generation_id,
            Generation.worker_id == worker_id,
            Generation.job_version == claim.job_version,
            Generation.status == PROCESSING,
        )

    async def still_held(self, worker_id: str, claim: Claim) -> bool:
        result = await self.session.execute(
            select(Generation.id).where(self._held(worker_id, claim))
        )
        return result.scalar_one_or_none() is not None

    async def renew_leases(
        self, worker_id: str, claims: list[Claim], lease_until: datetime
    ) -> None:
        if claims:
            await self.session.execute(
                update(Generation)
                .where(*self._held_exactly(worker_id, claims))
                .values(lease_expires_at=lease_until)
                .execution_options(synchronize_session=False)
            )

    async def set_progress(
        self, worker_id: str, claims: list[Claim], step: int, total: int
    ) -> set[str]:
        """A running batch's step, in one statement; returns the ids still held (the others
        were cancelled, deleted or re-queued meanwhile): it is also the batch's cancel check."""
        if not claims:
            return set()
        result = await self.session.execute(
            update(Generation)
            .where(*self._held_exactly(worker_id, claims))
            .values(progress_step=step, progress_total=total)
            .returning(Generation.id)
            .execution_options(synchronize_session=False)
        )
        return set(result.scalars())

    async def set_previews_ready(self, worker_id: str, claim: Claim, count: int) -> bool:
        result = await self.session.execute(
            update(Generation)
            .where(self._held(worker_id, claim), Generation.previews_ready < count)
            .values(previews_ready=count)
            .returning(Generation.id)
            .execution_options(synchronize_session=False)
        )
        return result.one_or_none() is not None

    async def finish(self, worker_id: str, claim: Claim, now: datetime, **values: Any) -> bool:
        """Write a terminal state if this worker still holds this version of the job."""
        result = await self.session.execute(
            update(Generation)
            .where(self._held(worker_id, claim))
            .values(
                worker_id=None, lease_expires_at=None, completed_at=now, updated_at=now, **values
            )
            .returning(Generation.id)
            .execution_options(synchronize_session=False)
        )
        return result.one_or_none() is not None

    async def cancel(self, generation: Generation, now: datetime) -> bool:
        """pending or processing → cancelled at once; a running attempt's result is then
        discarded (its claim no longer holds). Returns False when already terminal."""
        if generation.status.is_terminal:
            return False
        generation.status = GenerationStatus.CANCELLED
        generation.worker_id = None
        generation.lease_expires_at = None
        generation.completed_at = now
        generation.updated_at = now
        generation.error_message = None
        await self.session.flush()
        return True

    async def held_rows(self, worker_id: str, claims: list[Claim]) -> dict[str, Generation]:
        """The generations of these claims that this worker still holds at the claimed version,
        read fresh, by id: one query for a batch."""
        if not claims:
            return {}
        rows = await self.session.execute(
            select(Generation)
            .where(*self._held_exactly(worker_id, claims))
            .execution_options(populate_existing=True)
        )
        return {row.id: row for row in rows.scalars()}

    async def held_ids(self, worker_id: str, claims: list[Claim]) -> set[str]:
        """Which of these claims this worker still holds (not cancelled, not re-queued)."""
        if not claims:
            return set()
        result = await self.session.execute(
            select(Generation.id).where(*self._held_exactly(worker_id, claims))
        )
        return set(result.scalars())

    @staticmethod
    def _held_exactly(worker_id: str, claims: list[Claim]) -> tuple[Any, ...]:
        """These claims' rows that this worker runs now, at the claimed versions. The plain
        `id IN` is for SQLite: with a row-value IN alone it scans the table (or every running
        job, by the queue's index); beside it, the primary key is searched."""
        versions = [(c.generation_id, c.job_version) for c in claims]
        return (
            Generation.id.in_([c.generation_id for c in claims]),
            tuple_(Generation.id, Generation.job_version).in_(versions),
            Generation.worker_id == worker_id,
            Generation.status == PROCESSING,
        )

    async def release(
        self,
        worker_id: str,
        claim: Claim,
        now: datetime,
        *,
        count_retry: bool,
        max_retries: int,
        reason: str,
    ) -> GenerationStatus | None:
        """Hand a job back to the queue, or fail it when it has used up its retries."""
        current = (
            await self.session.execute(
                select(Generation.retry_count).where(self._held(worker_id, claim))
            )
        ).scalar_one_or_none()
        if current is None:
            return None
        retries = current + (1 if count_retry else 0)
        if retries > max_retries:
            failed = await self.finish(
                worker_id,
                claim,
                now,
                status=GenerationStatus.FAILED,
                retry_count=retries,
                error_message=f"Gave up after {retries} attempts: {reason}",
            )
            return GenerationStatus.FAILED if failed else None
        await self.session.execute(
            update(Generation)
            .where(self._held(worker_id, claim))
            .values(
                status=PENDING,
                worker_id=None,
                lease_expires_at=None,
                started_at=None,
                retry_count=retries,
                progress_step=None,
                progress_total=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return PENDING

    async def any_pending(
        self, model_ids: Collection[str] | None = None, except_models: Collection[str] = ()
    ) -> bool:
        """Whether a job `claim_next_batch` could take is waiting (no lock taken)."""
        only = model_filter(model_ids, except_models)
        found = await self.session.execute(
            select(Generation.id).where(Generation.status == PENDING, *only).limit(1)
        )
        return found.first() is not None

    async def any_expired(self, now: datetime) -> bool:
        """Whether some running job's lease ran out (no lock taken)."""
        found = await self.session.execute(select(Generation.id).where(lease_ran_out(now)).limit(1))
        return found.first() is not None

    async def expired_claims(self, now: datetime) -> list[tuple[str, Claim]]:
        """(worker id, claim) of running jobs whose lease ran out, locked for this transaction."""
        expired = (
            await self.session.execute(
                select(Generation.id, Generation.worker_id, Generation.job_version)
                .where(lease_ran_out(now))
                .with_for_update(skip_locked=True)
            )
        ).all()
        # worker_id is not NULL (the filter): the str() is for the type checker.
        return [
            (str(worker_id), Claim(generation_id, version))
            for generation_id, worker_id, version in expired
        ]

    async def queue_by_model(self) -> list[tuple[str, str, int]]:
        """(status, model, jobs) for every pending and processing job, the whole fleet."""
        rows = await self.session.execute(
            select(Generation.status, Generation.model_id, func.count(Generation.id))
            .where(Generation.status.in_([PENDING, PROCESSING]))
            .group_by(Generation.status, Generation.model_id)
        )
        return [(GenerationStatus(s).value, str(m), int(n)) for s, m, n in rows.all()]

    async def status_counts(self) -> dict[str, int]:
        rows = await self.session.execute(
            select(Generation.status, func.count(Generation.id))
            .where(Generation.status.in_([PENDING, PROCESSING]))
            .group_by(Generation.status)
        )
        return {GenerationStatus(status).value: int(count) for status, count in rows.all()}
