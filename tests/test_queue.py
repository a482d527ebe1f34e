"""The queue as SQL: claims, batch keys, leases, retries and stale results, on a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from imagesmith.auth.service import KeyService
from imagesmith.config import Settings
from imagesmith.db import migrate
from imagesmith.db.base import utcnow
from imagesmith.db.engine import Database, async_engine
from imagesmith.errors import Overloaded
from imagesmith.generation.jobs import JobQueue
from imagesmith.generation.repository import Claim, GenerationRepository
from imagesmith.image.repository import ImageRepository
from imagesmith.models import Generation, GenerationStatus
from imagesmith.runtime import Runtime
from tests.backends import new_backend


@pytest.fixture()
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    backend = new_backend(tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=backend.get("IMAGESMITH_DATABASE_URL"))
    await asyncio.to_thread(migrate.upgrade, settings)
    opened = Runtime.open(settings)
    yield opened
    await opened.close()


@pytest.fixture()
async def db(runtime: Runtime) -> tuple[Database, str, Settings]:
    async with runtime.db.transaction() as session:
        _org, project = await KeyService(session).ensure_project("q-org", "q-proj")
    return runtime.db, project.id, runtime.settings


async def add_jobs(database: Database, project_id: str, count: int, **overrides: Any) -> list[str]:
    async with database.transaction() as session:
        return await add_jobs_in(session, project_id, count, **overrides)


async def add_jobs_in(session: Any, project_id: str, count: int = 1, **overrides: Any) -> list[str]:
    """Pending jobs in `session`'s transaction, flushed (each INSERT, with its foreign key's
    KEY SHARE on the project), created a millisecond apart."""
    ids = []
    for i in range(count):
        values: dict[str, Any] = {
            "project_id": project_id,
            "prompt": f"p{i}",
            "original_prompt": f"p{i}",
            "model_id": "tiny-sd",
            "width": 64,
            "height": 64,
            "steps": 4,
            "guidance_scale": 7.5,
            "seed": i,
            "meta": {},
            "reference_images": [],
        }
        values.update(overrides)
        generation = Generation(**values)
        session.add(generation)
        await session.flush()
        ids.append(generation.id)
        generation.created_at = utcnow() + timedelta(milliseconds=i)
    return ids


async def claim(database: Database, worker: str, limit: int = 1, lease: float = 30) -> list[Claim]:
    now = utcnow()
    async with database.transaction() as session:
        return await GenerationRepository(session).claim_next_batch(
            worker, limit, now, now + timedelta(seconds=lease)
        )


async def row(database: Database, generation_id: str) -> Generation:
    async with database.transaction() as session:
        generation = await GenerationRepository(session).get_any(generation_id)
        assert generation is not None
        return generation


async def test_claims_are_exclusive_across_connections(db: Any) -> None:
    database, project_id, settings = db
    ids = await add_jobs(database, project_id, 12)
    other = Database(settings)  # a second pool: like a second worker process
    try:
        results = await asyncio.gather(
            *[claim(d, f"w{i}", limit=1) for i, d in enumerate([database, other] * 8)]
        )
    finally:
        await other.dispose()
    claimed = [c.generation_id for batch in results for c in batch]
    assert sorted(claimed) == sorted(ids) and len(set(claimed)) == 12


async def test_batch_key_groups_compatible_jobs_in_order(db: Any) -> None:
    database, project_id, _ = db
    small = await add_jobs(database, project_id, 3)
    await add_jobs(database, project_id, 2, width=128)
    more_small = await add_jobs(database, project_id, 2)
    batch = await claim(database, "w", limit=4)
    assert [c.generation_id for c in batch] == small + more_small[:1]


async def test_a_batch_holds_up_to_its_limit_in_images_not_jobs(db: Any) -> None:
    """A device's memory and time grow with the images in one call: jobs of several outputs
    fill a batch sooner, in queue order, and a job with more than the limit runs alone."""
    database, project_id, _ = db
    ids = []
    for outputs in (2, 2, 1, 3, 6, 1):
        ids += await add_jobs(database, project_id, 1, num_outputs=outputs)
    batches = [[c.generation_id for c in await claim(database, "w", limit=4)] for _ in range(4)]
    assert batches == [ids[0:2], ids[2:4], ids[4:5], ids[5:6]]


async def test_release_counts_retries_and_gives_up(db: Any) -> None:
    database, project_id, _ = db
    (job,) = await add_jobs(database, project_id, 1)
    for attempt in range(1, 3):
        (held,) = await claim(database, "w")
        async with database.transaction() as session:
            status = await GenerationRepository(session).release(
                "w", held, utcnow(), count_retry=True, max_retries=1, reason="boom"
            )
        if attempt == 1:
            assert status is GenerationStatus.PENDING
            assert (await row(database, job)).retry_count == 1
    final = await row(database, job)
    assert final.status is GenerationStatus.FAILED and final.retry_count == 2
    assert final.error_message == "Gave up after 2 attempts: boom"


async def test_expired_lease_returns_job_to_queue(db: Any, runtime: Runtime) -> None:
    database, project_id, _ = db
    (job,) = await add_jobs(database, project_id, 1)
    await claim(database, "dead-worker", lease=-1)
    await JobQueue(runtime, "live-worker").requeue_expired()
    again = await row(database, job)
    assert again.status is GenerationStatus.PENDING and again.retry_count == 1
    assert again.worker_id is None
    (held,) = await claim(database, "live-worker")
    assert held.generation_id == job


async def test_a_stale_result_is_discarded(db: Any) -> None:
    database, project_id, _ = db
    (job,) = await add_jobs(database, project_id, 1)
    (held,) = await claim(database, "w")
    async with database.transaction() as session:
        generation = await GenerationRepository(session).get_any(job)
        assert generation is not None
        generation.job_version += 1  # what PUT/regenerate does while the job runs
        generation.status = GenerationStatus.PENDING
    async with database.transaction() as session:
        wrote = await GenerationRepository(session).finish(
            "w", held, utcnow(), status=GenerationStatus.SUCCESS
        )
    assert wrote is False
    assert (await row(database, job)).status is GenerationStatus.PENDING


async def test_claims_are_fair_across_projects(db: Any) -> None:
    """A flood from one project does not push another project's job to the back."""
    database, flood_project, _ = db
    async with database.transaction() as session:
        _org, other = await KeyService(session).ensure_project("q-org", "small-tenant")
    flood = await add_jobs(database, flood_project, 10)
    (lone,) = await add_jobs(database, other.id, 1)
    order = [(await claim(database, "w"))[0].generation_id for _ in range(4)]
    assert order == [flood[0], lone, flood[1], flood[2]]


async def test_batch_mates_come_from_every_project(db: Any) -> None:
    database, flood_project, _ = db
    async with database.transaction() as session:
        _org, other = await KeyService(session).ensure_project("q-org", "second")
    flood = await add_jobs(database, flood_project, 6)
    (lone,) = await add_jobs(database, other.id, 1)
    batch = [c.generation_id for c in await claim(database, "w", limit=3)]
    assert batch == [flood[0], lone, flood[1]]


@dataclass
class Png:
    png: bytes
    width: int = 64
    height: int = 64


async def test_a_batch_is_recorded_together_and_a_bad_row_fails_only_its_job(
    db: Any, runtime: Runtime
) -> None:
    """A batch's successes are written in one transaction (one completion time for all); when
    that write fails, each job is written alone, and only the job whose row is bad fails."""
    from imagesmith.generation.jobs import Finished
    from imagesmith.models import Image, ImageSource

    database, project_id, _ = db
    async with database.transaction() as session:
        _org, other = await KeyService(session).ensure_project("q-org", "neighbour")
        session.add(  # an image of another project, whose id the bad job will try to reuse
            Image(
                id="clash",
                project_id=other.id,
                storage_key="x",
                mime_type="image/png",
                width=1,
                height=1,
                file_size=1,
                sha256="0" * 64,
                source=ImageSource.UPLOADED,
                meta={},
            )
        )
    ids = await add_jobs(database, project_id, 3, num_outputs=1)
    async with database.transaction() as session:
        bad = await GenerationRepository(session).get_any(ids[2])
        assert bad is not None
        bad.output_image_ids = ["clash"]  # a re-run whose image row cannot be inserted
    queue = JobQueue(runtime, "w")
    jobs = await queue.claim(3)
    assert [job.generation_id for job in jobs] == ids
    assert await queue.succeed_all([Finished(job, [Png(b"\x89PNG ok")]) for job in jobs[:2]]) == []
    first, second = [await row(database, i) for i in ids[:2]]
    assert first.status is second.status is GenerationStatus.SUCCESS
    assert first.completed_at == second.completed_at  # one write for the batch

    (again,) = await add_jobs(database, project_id, 1, num_outputs=1)
    (good,) = await queue.claim(1)
    failed = await queue.succeed_all(
        [Finished(jobs[2], [Png(b"\x89PNG bad")]), Finished(good, [Png(b"\x89PNG ok")])]
    )
    assert [job.generation_id for job, _error in failed] == [ids[2]]
    assert (await row(database, again)).status is GenerationStatus.SUCCESS
    assert (await row(database, ids[2])).status is GenerationStatus.PROCESSING  # released later


class RacingStore:
    """The object store, with a hook run just before the next put: the moment between a
    worker's "do I still hold the job?" check and its write."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.before_put: Any = None

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        hook, self.before_put = self.before_put, None
        if hook is not None:
            await hook()
        await self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_stale_attempt_cannot_overwrite_the_run_that_won(db: Any, runtime: Runtime) -> None:
    """Attempt A passes its check, then the generation is regenerated and run B finishes
    before A writes: A's bytes must not replace B's, and A's object is cleaned up."""
    from imagesmith.generation.service import GenerationService

    database, project_id, _ = db
    async with database.transaction() as session:
        org_slug, project_slug = await GenerationRepository(session).project_slugs(project_id)
    (job_id,) = await add_jobs(database, project_id, 1, num_outputs=1)
    store = RacingStore(runtime.store)
    runtime.store = store
    a, b = JobQueue(runtime, "a"), JobQueue(runtime, "b")
    (stale,) = await a.claim(1)

    async def regenerate_and_win() -> None:
        await GenerationService(runtime).regenerate(project_id, job_id)
        (winner,) = await b.claim(1)
        await b.succeed(winner, [Png(b"\x89PNG winner")])

    store.before_put = regenerate_and_win
    await a.succeed(stale, [Png(b"\x89PNG stale")])
    final = await row(database, job_id)
    assert final.status is GenerationStatus.SUCCESS and final.job_version == 2
    async with database.transaction() as session:
        image = await ImageRepository(session).get(project_id, final.output_image_id or "")
    assert image is not None
    stored = await runtime.store.get(image.storage_key)
    assert stored is not None and stored.data == b"\x89PNG winner"
    prefix = f"{org_slug}/{project_slug}/img/{image.id}"
    leftovers = [p for p in (runtime.settings.resolved_storage_dir / prefix).parent.glob("*")]
    assert [p.name for p in leftovers if not p.name.endswith(".type")] == [
        image.storage_key.rsplit("/", 1)[1]
    ]


async def test_lease_renewal_survives_a_failing_database_call(runtime: Runtime) -> None:
    """One "database is locked" used to end the renewal task, so a long job lost its lease and
    ran twice; now the next renewal simply tries again."""
    from imagesmith.worker.supervisor import Worker

    runtime.settings.lease_seconds = 0.6  # renew every 0.2 s
    worker = Worker(runtime, "renewer")
    calls: list[str] = []

    async def flaky_renew(_jobs: Any) -> None:
        calls.append("fail" if not calls else "ok")
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    worker.queue.renew = flaky_renew  # type: ignore[method-assign]
    task = asyncio.ensure_future(worker._renew_leases([]))
    await asyncio.sleep(1.0)
    task.cancel()
    assert calls[0] == "fail" and calls.count("ok") >= 2


def test_the_next_batch_is_claimed_as_many_steps_ahead_as_a_claim_takes() -> None:
    """At the last step at the latest; earlier only where the steps left are shorter than twice
    a claim (issue 13: at 64 px on a CPU a claim made at the last step often reached the child
    after the batch had ended), and never more than half a second ahead."""
    from imagesmith.worker.supervisor import claim_is_due

    assert claim_is_due(3, 4, None, 0.0)  # the last step, with nothing known
    assert claim_is_due(0, 1, None, 0.0)  # a one-step batch: as its only step starts
    assert not claim_is_due(2, 4, None, 0.012)  # no step timed yet
    assert claim_is_due(2, 4, 0.010, 0.012)  # 20 ms left, a claim takes 12
    assert not claim_is_due(1, 4, 0.010, 0.012)  # 30 ms left: too early
    assert not claim_is_due(2, 4, 0.020, 0.012)  # 128 px steps: the last step is soon enough
    assert not claim_is_due(10, 50, 0.05, 5.0)  # a slow claim leads by half a second at most
    assert claim_is_due(45, 50, 0.05, 5.0)


async def test_a_worker_claims_when_the_steps_left_take_less_than_a_claim(
    runtime: Runtime,
) -> None:
    """The steps are timed as the child reports them: with claims that take 0.2 s and steps of
    ~0.05 s, the claim comes steps before the last, not at step 0 or 1 (nothing timed yet)."""
    from imagesmith.worker.messages import BatchDone, Progress
    from imagesmith.worker.supervisor import Batch, Worker

    total = 12
    worker = Worker(runtime, "ahead")
    worker._claim_seconds = 0.2  # a lead of 0.4 s: ~8 steps

    class Child:
        def __init__(self) -> None:
            self.steps = iter(range(total + 1))
            self.step = -1  # the last step reported

        async def next_message(self, _wait: float) -> object:
            step = next(self.steps, None)
            if step is None:
                return BatchDone("b", {})
            await asyncio.sleep(0.05)
            self.step = step
            return Progress("b", step, total)

    async def nothing(*_args: Any) -> set[str]:
        return set()

    child = Child()
    worker.child = child  # type: ignore[assignment]
    worker.queue.still_held = nothing  # type: ignore[method-assign]
    worker.queue.report_progress = nothing  # type: ignore[method-assign]
    claimed_at: list[int] = []
    leases = asyncio.get_running_loop().create_future()
    batch = Batch("b", [], leases)
    assert await worker._collect(batch, {}, [], lambda: claimed_at.append(child.step))
    assert 2 <= claimed_at[0] < total - 1, claimed_at


async def test_a_pool_that_stays_busy_is_overload_not_a_crash(runtime: Runtime) -> None:
    """Every connection held past the pool's timeout (a burst on PostgreSQL did this): the caller
    gets Overloaded — 503 SERVER_BUSY with Retry-After in every dialect — not a 500."""
    small = async_engine(
        runtime.settings.resolved_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    database = runtime.db
    saved = database.read_sessionmaker, database.sessionmaker
    database.read_sessionmaker = async_sessionmaker(small, expire_on_commit=False)
    database.sessionmaker = async_sessionmaker(small, expire_on_commit=False)
    try:
        async with database.read() as holder:
            await holder.execute(text("SELECT 1"))  # takes the only connection
            with pytest.raises(Overloaded) as busy:
                async with database.read() as other:
                    await other.execute(text("SELECT 1"))
            assert busy.value.status_code == 503 and busy.value.headers["Retry-After"] == "5"
            with pytest.raises(Overloaded):
                async with database.transaction() as writer:
                    await writer.execute(text("SELECT 1"))
    finally:
        database.read_sessionmaker, database.sessionmaker = saved
        await small.dispose()


async def test_a_plain_create_takes_one_write_and_a_replay_none(db: Any, runtime: Runtime) -> None:
    """On SQLite every write waits its turn behind the worker's: a create without references
    commits its row in one write transaction, and an idempotent replay only reads."""
    from contextlib import asynccontextmanager

    from imagesmith.generation.schemas import GenerationRequest
    from imagesmith.generation.service import GenerationService
    from imagesmith.models import KeyType

    database, _, _ = db
    async with database.transaction() as session:
        keys = KeyService(session)
        issued = await keys.issue(
            KeyType.PROJECT, org_slug="q-org", project_slug="q-proj", name=None, expires_in_days=1
        )
        caller = await keys.authenticate(issued.secret)
    writes = 0
    transaction = database.transaction

    @asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        nonlocal writes
        writes += 1
        async with transaction() as session:
            yield session

    database.transaction = counted  # type: ignore[method-assign]
    service = GenerationService(runtime)
    request = GenerationRequest(prompt="a red circle", auto_enhance=False)
    view, created = await service.create(caller, request, idempotency_key="once")
    assert created and writes == 1
    again, created = await service.create(caller, request, idempotency_key="once")
    assert not created and again.generation.id == view.generation.id and writes == 1
    # A prompt naming an @alias is looked up (a read), and an unknown one stays text.
    await service.create(caller, GenerationRequest(prompt="@logo on a red circle"))
    assert writes == 2


def count_calls(
    obj: Any, name: str, monkeypatch: pytest.MonkeyPatch | None = None
) -> list[tuple[Any, ...]]:
    """Record each call of an async method of `obj` (its arguments), then run it. Pass
    `monkeypatch` when `obj` outlives the test (a class)."""
    calls: list[tuple[Any, ...]] = []
    method = getattr(obj, name)

    async def counted(*args: Any) -> Any:
        calls.append(args)
        return await method(*args)

    if monkeypatch is None:
        setattr(obj, name, counted)
    else:
        monkeypatch.setattr(obj, name, counted)
    return calls


async def test_a_waiter_reads_once_a_wake_up_and_answers_with_that_read(
    db: Any, runtime: Runtime
) -> None:
    """A waiter looks at the status once, then reads once per wake-up: the view, which is its
    answer when the job has ended (a status read and then the view were two reads an ending),
    and which it drops when it has not (a thousand long-polling clients each holding a view
    cost megabytes)."""
    from imagesmith.generation.service import GenerationService

    database, project_id, _ = db
    [generation_id] = await add_jobs(database, project_id, 1)
    service = GenerationService(runtime)
    status_reads, full_reads = count_calls(service, "_status"), count_calls(service, "get")
    waiting = asyncio.ensure_future(service.wait(project_id, generation_id, 30))
    for _ in range(3):  # changes that do not end it (an edit, a re-queue): each wakes the waiter
        await asyncio.sleep(0.05)
        runtime.notifier.generation_changed(generation_id)
    await asyncio.sleep(0.05)
    assert not waiting.done() and (len(status_reads), len(full_reads)) == (1, 3)
    await GenerationService(runtime).cancel(project_id, generation_id)
    view = await asyncio.wait_for(waiting, 10)
    assert view.generation.status is GenerationStatus.CANCELLED
    assert (len(status_reads), len(full_reads)) == (1, 4)


async def test_a_waiter_for_the_end_is_not_woken_by_its_jobs_claim_or_steps(
    db: Any, runtime: Runtime
) -> None:
    """`Prefer: wait` and the synchronous dialects wait for a job's end, yet each of its
    claim, steps and previews woke the waiter for a status read: a thousand such clients read a
    thousand rows at every progress write. Now only changes that may end it wake it; an event
    stream's watcher still sees every step."""
    from imagesmith.generation.service import GenerationService

    database, project_id, _ = db
    [generation_id] = await add_jobs(database, project_id, 1)
    service = GenerationService(runtime)
    reads, full_reads = count_calls(service, "_status"), count_calls(service, "get")
    queue = JobQueue(runtime, "w")
    with runtime.notifier.watch(generation_id, progress=True) as stream:
        waiting = asyncio.ensure_future(service.wait(project_id, generation_id, 30))
        await asyncio.sleep(0.05)
        assert len(reads) == 1  # its first look
        [job] = await queue.claim(1)
        assert await stream.wait(0)
        for step in (1, 2):
            await queue.report_progress([job], step, 4)
            assert await stream.wait(0)
        await asyncio.sleep(0.05)
        assert not waiting.done() and (len(reads), len(full_reads)) == (1, 0)
        await service.cancel(project_id, generation_id)
        view = await asyncio.wait_for(waiting, 10)
        assert view.generation.status is GenerationStatus.CANCELLED
        assert (len(reads), len(full_reads)) == (1, 1)
        assert await stream.wait(0)


async def test_the_sweep_wakes_a_waiter_for_the_end_only_for_an_ending(
    db: Any, runtime: Runtime
) -> None:
    """What a wake-up misses (another process's worker on SQLite) the sweep finds by reading
    the watched rows; a step it finds wakes only the watchers that follow progress."""
    from sqlalchemy import update

    from imagesmith.generation.watch import ChangeSweep

    database, project_id, _ = db
    [generation_id] = await add_jobs(database, project_id, 1)
    sweep = ChangeSweep(runtime)

    async def change(**values: Any) -> None:
        async with database.transaction() as session:
            await session.execute(
                update(Generation).where(Generation.id == generation_id).values(**values)
            )

    with (
        runtime.notifier.watch(generation_id, progress=False) as ends,
        runtime.notifier.watch(generation_id, progress=True) as steps,
    ):
        await sweep.sweep()  # first sight: still pending, nobody is woken
        assert not await ends.wait(0) and not await steps.wait(0)
        await change(progress_step=2, previews_ready=1)
        await sweep.sweep()
        assert not await ends.wait(0) and await steps.wait(0)
        await change(status=GenerationStatus.SUCCESS)
        await sweep.sweep()
        assert await ends.wait(0) and await steps.wait(0)


def test_no_route_or_dependency_runs_in_the_thread_pool(tmp_path: Path) -> None:
    """FastAPI runs a plain `def` endpoint or dependency in its thread pool: a thread hop on
    every request, and under a burst of requests forty threads, each with its own malloc
    arena. Every one of ours is `async def`."""
    from fastapi.dependencies.models import Dependant
    from starlette.routing import Route

    from imagesmith.api.dialect import Dialects
    from imagesmith.api.dialects import DIALECTS
    from imagesmith.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    sync: set[str] = set()

    def walk(dependant: Dependant) -> None:
        call = dependant.call
        if call is not None and not (
            asyncio.iscoroutinefunction(call)
            or asyncio.iscoroutinefunction(type(call).__call__)  # a security scheme
        ):
            sync.add(getattr(call, "__qualname__", repr(call)))
        for sub in dependant.dependencies:
            walk(sub)

    routes = [route for route, _ in Dialects(DIALECTS).routes()]
    assert len(routes) > 50
    for route in routes:
        walk(route.dependant)
    for plain in app.routes:  # Starlette's own routes (health, metrics) run `def` in threads too
        if type(plain) is Route and not asyncio.iscoroutinefunction(plain.endpoint):
            sync.add(plain.path)
    assert not sync, sorted(sync)


async def test_authentication_and_a_view_take_one_query_each(db: Any, runtime: Runtime) -> None:
    """What every request pays: authenticating its key is one query (the key with its
    organization and project), and a pending generation's view one (its project's slugs and
    balance); the generation row itself is the caller's one more."""
    from sqlalchemy import event

    from imagesmith.generation.views import build_view
    from imagesmith.models import KeyType

    database, project_id, _ = db
    async with database.transaction() as session:
        issued = await KeyService(session).issue(
            KeyType.PROJECT, org_slug="q-org", project_slug="q-proj", name=None, expires_in_days=1
        )
    [generation_id] = await add_jobs(database, project_id, 1)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith(("BEGIN", "PRAGMA")):
            statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with database.read() as session:
            principal, _ = await KeyService(session).identify(issued.secret)
            assert principal.project_slug == "q-proj" and principal.organization_slug == "q-org"
            assert len(statements) == 1
            generation = await GenerationRepository(session).get(project_id, generation_id)
            assert generation is not None
            view = await build_view(session, generation)
        assert view.project_slug == "q-proj" and len(statements) == 3, statements
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)


async def test_a_sqlite_statement_is_one_trip_to_its_connections_thread(
    db: Any, runtime: Runtime
) -> None:
    """aiosqlite runs every call on its connection's thread, each a round trip that wakes the
    thread and then the event loop; SQLAlchemy's adapter made four per query (open a cursor,
    execute, fetch, close) and three per INSERT or UPDATE. Now a statement, rows included, is
    one trip, and what SQLAlchemy reads back (rows, rowcount, a new row's id) is as before.
    Fails too if a SQLAlchemy or aiosqlite upgrade drops the private parts this relies on."""
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("aiosqlite: SQLite only")
    import aiosqlite

    database, project_id, _ = db
    [generation_id] = await add_jobs(database, project_id, 1)
    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
    try:
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))  # after the BEGIN, a trip of its own
            before = len(trips)
            found = await session.execute(
                text("SELECT id, prompt FROM generations WHERE id = :id"), {"id": generation_id}
            )
            assert found.all() == [(generation_id, "p0")] and len(trips) == before + 1, trips
            before = len(trips)
            changed = await session.execute(
                text("UPDATE generations SET prompt = 'q' WHERE project_id = :p"), {"p": project_id}
            )
            assert changed.rowcount == 1 and len(trips) == before + 1, trips  # type: ignore[attr-defined]
            await session.execute(text("CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await session.execute(text("INSERT INTO t (v) VALUES ('a'), ('b')"))
            inserted = await session.execute(text("INSERT INTO t (v) VALUES ('c')"))
            assert inserted.lastrowid == 3  # type: ignore[attr-defined]
            many = await session.execute(
                text("UPDATE t SET v = :v WHERE id = :id"),
                [{"v": "x", "id": 1}, {"v": "y", "id": 2}],
            )
            assert many.rowcount == 2  # type: ignore[attr-defined]
            assert (await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all() == [
                "x",
                "y",
                "c",
            ]
    finally:
        aiosqlite.Connection._execute = real  # type: ignore[method-assign]
    assert set(trips) <= {"_run", "commit", "rollback"}, trips  # no cursors opened or closed


async def test_an_unlimited_projects_create_writes_no_balance(db: Any, runtime: Runtime) -> None:
    """The write transaction of a create is the one every other write waits behind (SQLite):
    an unlimited project's balance is neither updated nor read again (admit read its row under
    the lock), the project's slugs come from the caller's key, and its new flow is not looked
    up (its id was just made)."""
    from sqlalchemy import event

    from imagesmith.generation.schemas import GenerationRequest
    from imagesmith.generation.service import GenerationService
    from imagesmith.limits.credits import Credits
    from imagesmith.models import KeyType

    database, project_id, _ = db
    async with database.transaction() as session:
        issued = await KeyService(session).issue(
            KeyType.PROJECT, org_slug="q-org", project_slug="q-proj", name=None, expires_in_days=1
        )
    async with database.read() as session:
        caller, _ = await KeyService(session).identify(issued.secret)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    request = GenerationRequest(prompt="a red circle", auto_enhance=False)
    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        view, _ = await GenerationService(runtime).create(caller, request)
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert view.project_slug == "q-proj" and view.remaining_credits is None
    assert not [s for s in statements if s.startswith("UPDATE projects")], statements
    assert not [s for s in statements if "organizations.slug" in s], statements
    assert not [s for s in statements if s.startswith("SELECT flows")], statements  # a new id
    # A limited project still pays, atomically.
    async with database.transaction() as session:
        await Credits(session).set_balance(project_id, 3)
    view, _ = await GenerationService(runtime).create(caller, request)
    assert view.remaining_credits == 2
    async with database.read() as session:
        assert await Credits(session).balance(project_id) == 2


async def test_a_long_poll_holds_no_rows_and_no_uploads_while_it_waits(
    db: Any, runtime: Runtime
) -> None:
    """A wait can last minutes, and a thousand clients long-poll at once: while they wait, the
    native GET and create and an OpenAI edit hold neither the job's rows (the handler's first
    view) nor the edit's uploaded images (stored with the job by then)."""
    import gc

    import httpx

    from imagesmith.app import create_app
    from imagesmith.auth.last_used import LastUsed
    from imagesmith.models import KeyType
    from tests.pictures import png

    database, project_id, _ = db
    async with database.transaction() as session:
        issued = await KeyService(session).issue(
            KeyType.PROJECT, org_slug="q-org", project_slug="q-proj", name=None, expires_in_days=1
        )
    app = create_app(runtime.settings, embedded_worker=False)
    app.state.runtime = runtime  # no lifespan here: what it would keep, and no worker
    app.state.last_used = LastUsed(runtime.db)
    upload = png((96, 80))

    def held(generation_id: str) -> list[str]:
        gc.collect()
        rows = [
            f"row of {o.id}"
            for o in gc.get_objects()
            if type(o) is Generation and o.__dict__.get("id") == generation_id
        ]
        uploads = [
            "the upload"
            for o in gc.get_objects()
            if type(o) is list and any(type(x) is bytes and x == upload for x in o)
        ]
        return rows + uploads

    async def while_waiting(method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        headers = {"X-API-Key": issued.secret, "Authorization": f"Bearer {issued.secret}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as client:
            before = set(runtime.notifier.watched())
            request = asyncio.ensure_future(client.request(method, path, **kwargs))
            for _ in range(200):
                await asyncio.sleep(0.02)
                waiting = set(runtime.notifier.watched()) - before
                if waiting:
                    break
            [generation_id] = waiting
            assert held(generation_id) == []
            await GenerationService(runtime).cancel(project_id, generation_id)
            return await asyncio.wait_for(request, 10)

    from imagesmith.generation.service import GenerationService

    [queued] = await add_jobs(database, project_id, 1)
    wait = {"Prefer": "wait=30"}
    read = await while_waiting("GET", f"/api/v1/generations/{queued}", headers=wait)
    assert read.json()["data"]["status"] == "cancelled"
    made = await while_waiting("POST", "/api/v1/generations", json={"prompt": "a"}, headers=wait)
    assert made.status_code == 201 and made.json()["data"]["status"] == "cancelled"
    edit = await while_waiting(
        "POST", "/v1/images/edits", data={"prompt": "b"}, files={"image": ("a.png", upload)}
    )
    assert edit.status_code == 500  # cancelled: OpenAI's answer for a job that did not finish


async def test_a_burst_of_reads_waits_for_a_turn_before_it_opens_sessions(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1000 long polls at once waited in the connection pool's queue, each with an open
    AsyncSession and its frames (~18 KB a request of the API's memory, bench/RESULTS.md). Reads
    now take a turn first: no more than READERS read sessions at once, a read opened inside
    another (same task) needs no second turn, and a turn that does not come in time is a 503,
    as an exhausted pool was."""
    from imagesmith.db import engine as db_engine

    database, _project_id, _ = db
    inside = most = 0

    async def reader() -> None:
        nonlocal inside, most
        async with database.read() as session:
            inside += 1
            most = max(most, inside)
            await session.execute(text("SELECT 1"))
            async with database.read() as inner:  # nested: the same turn
                await inner.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(reader() for _ in range(db_engine.READERS * 4)))
    assert most == db_engine.READERS  # the pool alone let 15 (SQLite) or 20 in

    entered = 0
    release = asyncio.Event()

    async def holder() -> None:
        nonlocal entered
        async with database.read():
            entered += 1
            await release.wait()

    holders = [asyncio.create_task(holder()) for _ in range(db_engine.READERS)]
    while entered < db_engine.READERS:
        await asyncio.sleep(0.01)
    monkeypatch.setattr(db_engine, "WAIT_SECONDS", 0.2)
    with pytest.raises(Overloaded):
        async with database.read():
            pass
    release.set()
    await asyncio.gather(*holders)
    async with database.read() as session:  # the turns were given back
        assert (await session.execute(text("SELECT 1"))).scalar() == 1


async def test_a_create_holding_its_project_does_not_hold_up_the_workers_inserts(db: Any) -> None:
    """PostgreSQL: a create locks its project's row to count it against the limits. An insert
    that only references the project (the worker storing an image: a foreign key's KEY SHARE
    lock) must not wait for that: under a burst of creates, FOR UPDATE kept the worker's
    results queued behind them on the row (pg_stat_activity: `INSERT INTO images` waiting on a
    tuple lock)."""
    from imagesmith.limits.quotas import Quotas

    database, project_id, settings = db
    if database.is_sqlite:
        pytest.skip("row locks are PostgreSQL's; SQLite has one writer at a time")
    async with database.transaction() as holder:
        await Quotas(holder).admit(project_id)
        engine = async_engine(settings.resolved_database_url)  # another connection, the worker's
        try:
            async with async_sessionmaker(engine)() as other, other.begin():
                await other.execute(text("SET LOCAL lock_timeout = '2s'"))
                await add_jobs_in(other, project_id)
        finally:
            await engine.dispose()


async def test_a_postgresql_url_takes_libpqs_options(runtime: Runtime) -> None:
    """Managed PostgreSQL hands out URLs such as `…?sslmode=require`: the serving driver
    (asyncpg) is given the URL as libpq reads it, not as keywords (a TypeError there)."""
    if runtime.settings.is_sqlite:
        pytest.skip("PostgreSQL URLs")
    url = runtime.settings.resolved_database_url
    url += ("&" if "?" in url else "?") + "sslmode=disable&application_name=imagesmith-test"
    engine = async_engine(url)
    try:
        async with engine.connect() as conn:
            name = await conn.execute(text("SELECT current_setting('application_name')"))
            assert name.scalar() == "imagesmith-test"
    finally:
        await engine.dispose()


async def test_the_listener_hears_again_after_its_connection_is_killed(runtime: Runtime) -> None:
    """PostgreSQL: other processes' wake-ups come over one LISTEN connection. Killed (a restart,
    a failover, an idle-connection reaper), it is opened again and the wake-ups come back."""
    from imagesmith.db.listen import APPLICATION_NAME, listen
    from imagesmith.db.notify import CHANGED_CHANNEL, Notifier

    if runtime.settings.is_sqlite:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    notifier, stop = Notifier(), asyncio.Event()
    listening = asyncio.create_task(
        listen(runtime.settings.resolved_database_url, notifier, stop, heartbeat=1.0)
    )

    async def heard(seconds: float) -> bool:
        with notifier.watch("g1", progress=False) as watch:
            for _ in range(int(seconds * 5)):
                async with runtime.db.transaction() as session:
                    await session.execute(text(f"SELECT pg_notify('{CHANGED_CHANNEL}', 'g1')"))
                if await watch.wait(0.2):
                    return True
        return False

    async def kill_listener() -> int:
        async with runtime.db.transaction() as session:
            killed = await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION_NAME},
            )
            return len(killed.all())

    try:
        assert await heard(10)
        assert await kill_listener() == 1
        assert await heard(15)  # a new connection, listening again
    finally:
        stop.set()
        await asyncio.wait_for(listening, 10)


async def test_a_burst_of_one_stale_keys_requests_writes_its_last_use_once(
    runtime: Runtime,
) -> None:
    """Every request that read a key whose last-used time was stale wrote the time in a write
    transaction of its own, and waited for it: a thousand of one key at the minute's turn
    queued a thousand writes (on PostgreSQL behind the burst's creates). The first one now
    starts one write in the background and the others none."""
    from sqlalchemy import event
    from starlette.requests import Request

    from imagesmith.api.deps import principal_from
    from imagesmith.api.native.auth import NATIVE_KEY
    from imagesmith.auth.last_used import LastUsed
    from imagesmith.models import KeyType

    async with runtime.db.transaction() as session:
        issued = await KeyService(session).issue(
            KeyType.PROJECT,
            org_slug="t-org",
            project_slug="t-proj",
            name=None,
            expires_in_days=None,
        )
    writes = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    last_used = LastUsed(runtime.db)  # what the app's lifespan keeps in app.state
    scope = {"type": "http", "app": SimpleNamespace(state=SimpleNamespace(last_used=last_used))}
    authenticate = principal_from(NATIVE_KEY)
    principals = await asyncio.gather(
        *(authenticate(Request(scope), runtime, issued.secret) for _ in range(40))
    )
    await last_used.drain()
    assert {p.api_key_id for p in principals} == {issued.key.id}
    assert len(writes) == 1
    async with runtime.db.read() as session:
        (used,) = (
            await session.execute(
                text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": issued.key.id}
            )
        ).one()
    assert used is not None


async def test_a_batchs_rows_are_found_by_their_key_not_by_a_scan(db: Any) -> None:
    """Progress, leases, the cancel check and the results name a batch's rows by id and claimed
    version: SQLite's plan searches the primary key (with a row-value IN alone it scans the
    table, or every running job by the queue's index)."""
    database, _project, _settings = db
    claims = [Claim("a", 1), Claim("b", 2)]
    query = select(Generation.id).where(*GenerationRepository._held_exactly("w", claims))
    async with database.read() as session:
        if session.bind.dialect.name != "sqlite":
            pytest.skip("the planner asked is SQLite's")
        sql = query.compile(dialect=session.bind.dialect, compile_kwargs={"literal_binds": True})
        plan = " ".join(
            str(r[-1]) for r in await session.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
        )
    assert "SEARCH generations USING INDEX" in plan and "(id=?)" in plan, plan


async def test_a_progress_write_is_the_batchs_cancel_check(db: Any, runtime: Runtime) -> None:
    """A running batch wrote each job's progress in a statement of its own and, every 0.5 s
    beside it, read which jobs it still held. One UPDATE for the batch now answers both: it
    writes only the rows still held and returns them, so a batch whose child reports steps
    never needs the read, and a job cancelled mid-batch is dropped at the next write."""
    from imagesmith.generation.service import GenerationService
    from imagesmith.worker.messages import BatchDone, CancelBatch, Progress
    from imagesmith.worker.supervisor import Batch, Worker

    database, project_id, _ = db
    first, second = await add_jobs(database, project_id, 2)
    worker = Worker(runtime, "ticks")
    jobs = await worker.queue.claim(2)
    held = {job.generation_id: job for job in jobs}
    assert await worker.queue.report_progress(jobs, 1, 4) == {first, second}
    await GenerationService(runtime).cancel(project_id, first)
    assert await worker.queue.report_progress(jobs, 2, 4) == {second}
    async with database.read() as session:
        rows = {g.id: g for g in (await session.execute(select(Generation))).scalars()}
    assert (rows[first].progress_step, rows[second].progress_step) == (1, 2)
    assert not any(job.progress_hooked for job in jobs)  # no webhook wanted their steps

    total, sent = 16, []

    class Child:  # a step every 0.1 s: a progress write is due every fifth
        def __init__(self) -> None:
            self.steps = iter(range(total + 1))

        async def next_message(self, _wait: float) -> object:
            step = next(self.steps, None)
            if step is None:
                return BatchDone("b", {})
            await asyncio.sleep(0.1)
            if step == 8:
                await GenerationService(runtime).cancel(project_id, second)
            return Progress("b", step, total)

        def send(self, message: object) -> None:
            sent.append(message)

    worker.child = Child()  # type: ignore[assignment]
    reads = count_calls(worker.queue, "still_held")
    writes = count_calls(worker.queue, "report_progress")
    batch = Batch("b", jobs, asyncio.get_running_loop().create_future())
    assert await worker._collect(batch, held, [], lambda: None)
    assert not held and len(writes) >= 2 and reads == []
    assert [type(message) for message in sent] == [CancelBatch]  # all cancelled: stop it


async def test_a_claim_notes_which_jobs_a_webhook_wants_the_steps_of(
    db: Any, runtime: Runtime
) -> None:
    """Progress writes announce generation.progress only for the jobs whose targets wanted it
    at their claim: each announcement read the job's row, wanted or not."""
    database, project_id, _ = db
    [plain] = await add_jobs(database, project_id, 1)
    url = "https://example.com/h"
    [hooked] = await add_jobs(
        database, project_id, 1, webhook_url=url, webhook_events=["generation.progress"]
    )
    [other] = await add_jobs(database, project_id, 1, webhook_url=url)  # the default events
    jobs = await JobQueue(runtime, "w").claim(3)
    assert {job.generation_id: job.progress_hooked for job in jobs} == {
        plain: False,
        hooked: True,
        other: False,
    }


async def test_a_wait_starts_from_the_callers_read_unless_a_change_came_since(
    db: Any, runtime: Runtime
) -> None:
    """A create with `Prefer: wait` (and the OpenAI and Stablecog synchronous paths) read its
    job's status again as the wait began, right after the create had written it: a read a
    request. The wait now starts from the caller's view, unless the notifier heard of a change
    that may end the job since that view's read began; then it reads, and a job that ended in
    between is answered at once, not at the timeout."""
    from imagesmith.generation.service import GenerationService

    database, project_id, _ = db
    first, second = await add_jobs(database, project_id, 2)
    service = GenerationService(runtime)
    view = await service.get(project_id, first)
    known = view.known()
    assert known is not None and known[0] is GenerationStatus.PENDING
    status_reads = count_calls(service, "_status")
    waiting = asyncio.ensure_future(service.wait(project_id, first, 30, known=known))
    await asyncio.sleep(0.05)
    assert not waiting.done() and status_reads == []
    await service.cancel(project_id, first)
    assert (await asyncio.wait_for(waiting, 10)).generation.status is GenerationStatus.CANCELLED

    known = (await service.get(project_id, second)).known()
    await service.cancel(project_id, second)  # ends between the caller's read and its wait
    ended = await asyncio.wait_for(service.wait(project_id, second, 30, known=known), 5)
    assert ended.generation.status is GenerationStatus.CANCELLED and len(status_reads) == 1


async def test_a_wait_ends_when_its_client_leaves_and_not_when_the_listen_fails(
    db: Any, runtime: Runtime
) -> None:
    """`gone()` returning (the client hung up) ends the wait at once, and with
    OnTimeout.CANCEL cancels the job; a `gone()` that fails says nothing: the wait goes on."""
    from imagesmith.generation.service import GenerationService, OnTimeout

    database, project_id, _ = db
    stays, leaves = await add_jobs(database, project_id, 2)
    service = GenerationService(runtime)

    async def broken() -> None:
        raise RuntimeError("an ASGI server that answers otherwise")

    waiting = asyncio.ensure_future(
        service.wait(project_id, stays, 30, OnTimeout.CANCEL, gone=broken)
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await service.cancel(project_id, stays)
    assert not (await asyncio.wait_for(waiting, 10)).timed_out

    hung_up = asyncio.Event()
    waiting = asyncio.ensure_future(
        service.wait(project_id, leaves, 30, OnTimeout.CANCEL, gone=hung_up.wait)
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()
    hung_up.set()
    view = await asyncio.wait_for(waiting, 5)
    assert view.timed_out and view.generation.status is GenerationStatus.CANCELLED


async def test_a_claim_that_found_nothing_skips_its_next_look_until_work_is_announced(
    db: Any, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most claims find nothing (one after every batch, one ahead of its last step): a process
    that hears every announcement looks again only when work was announced since its last empty
    look, or `poll_seconds` after it; one that may miss announcements always looks."""
    database, project_id, _ = db
    looks = count_calls(GenerationRepository, "any_pending", monkeypatch)
    queue = JobQueue(runtime, "w")
    queue.settings = runtime.settings.model_copy(update={"poll_seconds": 600})
    runtime.hear_only_this_process(True)  # the PostgreSQL fixture hears from its LISTEN only
    assert await queue.claim(1) == [] and len(looks) == 1
    assert await queue.claim(1) == [] and len(looks) == 1  # nothing announced: no look
    [unannounced] = await add_jobs(database, project_id, 1)
    assert await queue.claim(1) == [] and len(looks) == 1  # found by the look poll_seconds on
    runtime.notifier.work_queued()
    assert [job.generation_id for job in await queue.claim(1)] == [unannounced]
    assert len(looks) == 2
    assert await queue.claim(1) == [] and len(looks) == 3  # the last look found work
    assert await queue.claim(1, ["other-model"]) == [] and len(looks) == 4  # another filter
    runtime.hear_only_this_process(False)  # SQLite beside other processes
    assert runtime.notifier.work_heard() is None
    assert await queue.claim(1) == [] and await queue.claim(1) == [] and len(looks) == 6
    runtime.hear_only_this_process(True)
    queue.settings = runtime.settings.model_copy(update={"poll_seconds": 0.01})
    assert await queue.claim(1) == [] and len(looks) == 7
    await asyncio.sleep(0.05)
    assert queue.look_due_in() == 0.0  # an idle worker waits no longer than this for news
    assert await queue.claim(1) == [] and len(looks) == 8  # poll_seconds on: the safety net
    assert 0.0 < queue.look_due_in() <= 0.01


async def test_only_a_lone_process_on_sqlite_counts_as_hearing_every_change(
    runtime: Runtime,
) -> None:
    """SQLite carries no wake-ups between processes. A separate `imagesmith worker` never hears
    its API; an API with its embedded worker hears everything until a worker of another process
    beats in the workers table, and then sweeps its waiters every poll_seconds."""
    from imagesmith.generation.watch import ChangeSweep
    from imagesmith.generation.workers import WorkerRepository
    from imagesmith.models import WorkerRecord
    from imagesmith.worker.run import worker_runtime

    worker = worker_runtime(runtime.settings)
    try:
        heard = worker.notifier.work_heard()
        assert heard is None if runtime.settings.is_sqlite else heard is not None
    finally:
        await worker.close()
    settings = runtime.settings
    sweep = ChangeSweep(runtime, count_workers=True)
    async with runtime.db.transaction() as session:  # this process's own (its embedded one)
        await WorkerRepository(session).register("mine", "here", 1, utcnow())
    runtime.hear_only_this_process(False)
    await sweep.count_workers()
    assert runtime.notifier.work_heard() is not None
    assert runtime.notifier.recheck_seconds == settings.wait_recheck_seconds
    async with runtime.db.transaction() as session:  # another process's, same host and pid
        now = utcnow()
        session.add(
            WorkerRecord(
                id="theirs", hostname="here", pid=1, started_at=now, heartbeat_at=now, batches_run=0
            )
        )
    await sweep.count_workers()
    assert runtime.notifier.work_heard() is None
    assert runtime.notifier.recheck_seconds == min(
        settings.poll_seconds, settings.wait_recheck_seconds
    )
    async with runtime.db.transaction() as session:
        await WorkerRepository(session).stopped("theirs", utcnow())
    await sweep.count_workers()
    assert runtime.notifier.work_heard() is not None
