"""Generation rules: resolve defaults, enqueue (commit the row), update in place, delete, wait."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith import metrics
from imagesmith.auth.repository import TenancyRepository
from imagesmith.auth.service import Principal
from imagesmith.catalog.models import ModelSpec, UnknownModel
from imagesmith.db.base import storable_text, utcnow
from imagesmith.db.notify import Watch
from imagesmith.errors import (
    AliasConflict,
    Conflict,
    GenerationNotFound,
    ImageNotFound,
    ValidationFailed,
)
from imagesmith.generation.announce import announce
from imagesmith.generation.aspect import size_for
from imagesmith.generation.enhance import PromptEnhancer
from imagesmith.generation.init_image import InitImages
from imagesmith.generation.parameters import ParamError, pick_seed, resolve_params
from imagesmith.generation.repository import GenerationRepository
from imagesmith.generation.schemas import (
    GenerationRequest,
    GenerationView,
    ListFilter,
    OutputFilter,
    OutputsPage,
)
from imagesmith.generation.views import build_view
from imagesmith.generation.workers import WorkerRepository
from imagesmith.image.aliases import aliases_in_prompt, resolve_image
from imagesmith.image.names import NEW_FLOW
from imagesmith.image.repository import ImageRepository
from imagesmith.image.service import ImageService, ensure_flow
from imagesmith.limits.credits import Credits
from imagesmith.limits.quotas import Quotas
from imagesmith.models import Generation, GenerationStatus, Image, WorkerRecord
from imagesmith.runtime import Runtime
from imagesmith.storage.base import delete_quietly, preview_keys
from imagesmith.webhooks import events
from imagesmith.webhooks.events import parse_events
from imagesmith.webhooks.service import check_target

MAX_REFERENCES = 3

log = logging.getLogger(__name__)


class OnTimeout(enum.Enum):
    """What a synchronous wait does with a job that has not finished by its deadline."""

    RETURN = "return"  # answer with the record as it stands (pending or processing)
    CANCEL = "cancel"  # the client gives up: cancel the job, its credits come back


def _client_left(listening: asyncio.Future[object]) -> bool:
    """Whether a wait's `gone()` says the client hung up: it returned (one that failed says
    nothing, and the wait goes on)."""
    return listening.done() and not listening.cancelled() and listening.exception() is None


def _wake_when_left(listening: asyncio.Future[object], changes: Watch) -> None:
    if not listening.cancelled() and listening.exception() is not None:
        log.warning(
            "wait.gone_failed error=%r (the client's leaving is not followed)",
            listening.exception(),
        )
    elif _client_left(listening):
        changes.wake()


def request_fingerprint(request: GenerationRequest) -> str:
    payload = json.dumps(asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def check_webhook_naming(principal: Principal, request: GenerationRequest) -> None:
    """Only a key holder says where webhooks signed with the project's secret go: an app's end
    user would receive them at a URL of their choosing, and could hold the project's delivery
    slots with a URL that never answers."""
    if request.webhook_url is not None and not principal.key_holder:
        field = request.field_names.get("webhook_url", "webhookUrl")
        raise ValidationFailed(
            f"{field}: an app's end user cannot choose where the project's signed webhooks "
            "go; the developer registers the project's endpoint (POST /api/v1/webhooks), "
            "which hears every generation"
        )


class GenerationService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.enhancer = PromptEnhancer.from_settings(runtime.settings)

    # Create ------------------------------------------------------------------------------

    def resolve_model(self, request: GenerationRequest) -> ModelSpec:
        try:
            return self.rt.registry.get(request.model_id or self.rt.settings.default_model)
        except UnknownModel as exc:
            field = request.field_names.get("model", "model")
            raise ParamError(field, f"{field}: {exc}", kind="model") from None

    async def create(
        self, principal: Principal, request: GenerationRequest, idempotency_key: str | None = None
    ) -> tuple[GenerationView, bool]:
        """Commit a pending generation (the queued job); returns (view, created)."""
        began = time.monotonic()  # no change to the job can come before this
        project_id = principal.require_project()
        for name, text in (
            ("prompt", request.prompt),
            ("negative_prompt", request.negative_prompt),
            ("instructions", request.instructions),
        ):
            storable_text(text, request.field_names.get(name, name))
        webhook_url, webhook_events = await self._webhook(principal, project_id, request)
        fingerprint = request_fingerprint(request)
        if idempotency_key is not None:
            replay = await self._replay(project_id, idempotency_key, fingerprint)
            if replay is not None:
                return replay, False
        spec = self.resolve_model(request)
        references = await self._references(project_id, request, principal.key_holder)
        if references and request.init_image is None:
            # Without an IP-Adapter configured, the first reference is the img2img init image.
            request.init_image = references[0].id
            if request.prompt_strength is None:
                request.prompt_strength = self.rt.settings.reference_strength
        params = resolve_params(spec, request)
        # Before any paid work (fetching an init image, asking an LLM). The charge itself is
        # taken atomically when the row is committed and refuses what this would: a create
        # with no such work (most of them) skips this read, one session fewer per create.
        if request.init_image is not None or (request.auto_enhance and self.enhancer.is_remote):
            await self._check_affordable(project_id, params.num_outputs)
            async with self.rt.db.read() as session:  # and the plan, which the write counts
                await Quotas(session).check(project_id, principal.end_user_id)
        await self._check_alias_free(project_id, request.alias)
        init_key = None
        if request.init_image is not None:
            init_key = await InitImages(self.rt).resolve(principal, request)
        prompt, enhanced_by = await self._enhance(
            request.prompt, request.auto_enhance, request.template
        )
        flow_id = str(uuid.uuid4()) if request.flow_id == NEW_FLOW else request.flow_id

        def new_generation() -> Generation:
            # Built once the transaction has its turn: a thousand creates waiting for it held
            # a thousand ORM rows (~1 KB each, bench/RESULTS.md) on top of their requests.
            generation = Generation(
                project_id=project_id,
                api_key_id=principal.api_key_id,
                flow_id=flow_id,
                prompt=prompt,
                original_prompt=request.prompt,
                auto_enhance=request.auto_enhance,
                enhancement_template=request.template,
                enhanced_by=enhanced_by,
                aspect_ratio=request.aspect_ratio if request.width is None else None,
                negative_prompt=request.negative_prompt,
                seed_requested=(
                    request.seed if request.seed is not None and request.seed >= 0 else None
                ),
                reference_images=[
                    {"imageId": image.id, "alias": image.alias} for image in references
                ],
                init_image_key=init_key,
                init_image_ref=request.init_image,
                dialect=request.dialect,
                end_user_id=principal.end_user_id,
                instructions=request.instructions,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
                alias=request.alias,
                flow_alias=request.flow_alias,
                meta=dict(request.meta),
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
                status=GenerationStatus.PENDING,
            )
            generation.set_params(params)
            # What `charge_run` below takes: set now, the row is inserted with it and no UPDATE
            # follows in the one write transaction other writers wait for. (It rolls back with
            # the row when the charge is refused.)
            generation.credits_charged = generation.num_outputs
            return generation

        try:
            async with self.rt.db.transaction() as session:
                generation = new_generation()
                repo = GenerationRepository(session)
                # First: admit locks the project row. Any insert before it would take a key
                # share lock on that row (foreign keys), and two creates upgrading their shares
                # at once deadlock on PostgreSQL.
                project = await Quotas(session).admit(project_id, principal.end_user_id)
                if flow_id is not None:
                    fresh = request.flow_id == NEW_FLOW
                    await ensure_flow(ImageRepository(session), project_id, flow_id, fresh=fresh)
                await repo.add(generation)
                remaining = await Credits(session).charge_run(generation, locked=project)
                if principal.organization_slug and principal.project_slug:
                    org_slug, project_slug = principal.organization_slug, principal.project_slug
                else:
                    org_slug, project_slug = await repo.project_slugs(project_id)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # Two requests with one key raced: the other one committed first.
            replay = await self._replay(project_id, idempotency_key, fingerprint)
            if replay is None:
                raise
            return replay, False
        self.rt.notifier.work_queued()
        view = GenerationView(generation, None, org_slug, project_slug, references=references)
        view.remaining_credits = remaining
        view.read_at = began
        return view, True

    async def _webhook(
        self, principal: Principal, project_id: str, request: GenerationRequest
    ) -> tuple[str | None, list[str] | None]:
        check_webhook_naming(principal, request)
        names = request.field_names
        events = parse_events(request.webhook_events, names.get("webhook_events", "webhookEvents"))
        if request.webhook_url is None:
            return None, events
        url = await check_target(
            self.rt, project_id, request.webhook_url, names.get("webhook_url", "webhookUrl")
        )
        return url, events

    async def _replay(self, project_id: str, key: str, fingerprint: str) -> GenerationView | None:
        async with self.rt.db.read() as session:
            existing = await GenerationRepository(session).by_idempotency_key(project_id, key)
            if existing is None:
                return None
            if existing.request_hash != fingerprint:
                raise Conflict(
                    f"Idempotency-Key '{key}' was already used with a different request body; "
                    "use a new key for a new request",
                    code="IDEMPOTENCY_KEY_REUSED",
                )
            return await self._view(session, existing)

    async def _enhance(
        self, prompt: str, auto_enhance: bool, template: str
    ) -> tuple[str, str | None]:
        if not auto_enhance:
            return prompt, None
        enhanced = await self.enhancer.enhance(prompt, template)
        return enhanced.prompt, enhanced.method

    async def _check_affordable(self, project_id: str, amount: int) -> None:
        async with self.rt.db.read() as session:
            await Credits(session).check_affordable(project_id, amount)

    async def _check_alias_free(self, project_id: str, alias: str | None) -> None:
        if alias is None:
            return
        async with self.rt.db.read() as session:
            if await ImageRepository(session).by_alias(project_id, alias) is not None:
                raise AliasConflict(
                    f"Alias '{alias}' is already used by another image in this project"
                )

    async def _references(
        self, project_id: str, request: GenerationRequest, prompt_aliases: bool
    ) -> list[Image]:
        """Explicit references first, then `@name` tokens of the prompt (for a caller who reads
        the library); merged, de-duplicated, at most 3. An unknown explicit reference is an
        error; an unknown prompt token is text."""
        flow_id = request.flow_id if request.flow_id not in (None, NEW_FLOW) else None
        found: list[Image] = []
        tokens = aliases_in_prompt(request.prompt) if prompt_aliases else []
        if not request.reference_images and not tokens:
            return found  # most creates: no database round trip
        # A read: it took a write turn before, one per create, queued behind the worker's writes.
        async with self.rt.db.read() as session:
            repo = ImageRepository(session)
            for ref in request.reference_images:
                image = await resolve_image(repo, project_id, ref, flow_id)
                if image is None:
                    raise ImageNotFound(f"referenceImages: no image '{ref}' in this project")
                if image.id not in {f.id for f in found}:
                    found.append(image)
            for token in tokens:
                image = await resolve_image(repo, project_id, token, flow_id)
                if image is not None and image.id not in {f.id for f in found}:
                    found.append(image)
        # At most 3, unless the request itself names more (uploaded examples are all kept).
        return found[: max(MAX_REFERENCES, len(request.reference_images))]

    # Read --------------------------------------------------------------------------------

    async def _view(self, session: AsyncSession, generation: Generation) -> GenerationView:
        return await build_view(session, generation)

    async def create_with_images(
        self,
        principal: Principal,
        request: GenerationRequest,
        images: list[bytes],
        meta: dict[str, Any],
    ) -> tuple[GenerationView, bool]:
        """A generation conditioned on uploaded images (devkit4ai's examples, an OpenAI edit's
        input): they become the request's references, so the first is the img2img init image
        as for every reference. Nothing is stored for a refused request: the images are
        validated and the request prechecked first, and stored images go if the create fails."""
        library = ImageService(self.rt)
        await self.precheck(principal, request)  # cheap: before decoding every upload
        infos = await library.inspect_all(images)
        saved = await library.save_uploads(principal, images, infos, meta)
        request.reference_images = [image.id for image in saved]
        try:
            return await self.create(principal, request)
        except Exception:
            await library.forget(saved)
            raise

    async def precheck(self, principal: Principal, request: GenerationRequest) -> None:
        """Everything `create` would refuse before any work: the model, the parameters, the
        credits and the quotas. For dialects that store uploads first (they must not store
        anything for a request that is then refused)."""
        project_id = principal.require_project()
        check_webhook_naming(principal, request)
        params = resolve_params(self.resolve_model(request), request)
        await self._check_affordable(project_id, params.num_outputs)
        async with self.rt.db.read() as session:  # counts nothing: the create counts, locked
            await Quotas(session).check(project_id, principal.end_user_id)

    async def anonymous_allowance(self, project_id: str) -> int | None:
        """Anonymous generations a client IP may make per day, or None when they are off."""
        async with self.rt.db.read() as session:
            project = await TenancyRepository(session).project_by_id(project_id)
        if project is None or not project.anonymous_enabled:
            return None
        return project.anonymous_daily_limit

    async def get_owned(self, principal: Principal, generation_id: str) -> GenerationView:
        """One generation of the caller's project; an end user sees only their own."""
        view = await self.get(principal.require_project(), generation_id)
        if (
            principal.end_user_id is not None
            and view.generation.end_user_id != principal.end_user_id
        ):
            raise GenerationNotFound(generation_id)
        return view

    async def set_public(
        self, principal: Principal, generation_id: str, is_public: bool
    ) -> GenerationView:
        await self.get_owned(principal, generation_id)
        project_id = principal.require_project()
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            generation.is_public = is_public
            generation.updated_at = utcnow()
            return await self._view(session, generation)

    async def get(self, project_id: str, generation_id: str) -> GenerationView:
        began = time.monotonic()
        async with self.rt.db.read() as session:
            generation = await GenerationRepository(session).get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            view = await self._view(session, generation)
        view.read_at = began
        return view

    async def _status(self, project_id: str, generation_id: str) -> GenerationStatus:
        async with self.rt.db.read() as session:
            status = await GenerationRepository(session).status_of(project_id, generation_id)
        if status is None:
            raise GenerationNotFound(generation_id)
        return status

    async def wait(
        self,
        project_id: str,
        generation_id: str,
        timeout: float,
        on_timeout: OnTimeout = OnTimeout.RETURN,
        gone: Callable[[], Awaitable[object]] | None = None,
        known: tuple[GenerationStatus, float] | None = None,
        on_gone: OnTimeout | None = None,
    ) -> GenerationView:
        """Block until the job is terminal or `timeout` passes (capped by max_wait_seconds);
        then apply `on_timeout`. The wait also ends as soon as `gone()`, awaited beside it,
        returns (the client has hung up): then `on_gone` applies (by default `on_timeout`).
        `known`: the status the caller read and when it began that read
        (`GenerationView.known()`), which spares the first read when nothing was heard of
        since. Remote workers' results cost one poll."""
        deadline = time.monotonic() + min(timeout, self.rt.settings.max_wait_seconds)
        with self.rt.notifier.watch(generation_id, progress=False) as changes:
            # The client's leaving wakes the waiter like a change. It used to be asked every
            # second (Starlette's is_disconnected): ~0.4 ms of the API's CPU a waiter a second,
            # 85 ms a second for 200 waiting clients (bench/RESULTS.md).
            left = asyncio.ensure_future(gone()) if gone is not None else None
            if left is not None:
                left.add_done_callback(lambda task: _wake_when_left(task, changes))
            try:
                # A waiter holds only the job's status: a thousand long-polling clients each
                # holding a full view (the ORM rows and their images) cost megabytes. The
                # watch is in place, so a change from here on wakes it; one between the
                # caller's read and here was remembered by the notifier.
                if known is not None and not self.rt.notifier.changed_since(
                    generation_id, known[1]
                ):
                    status = known[0]
                else:
                    status = await self._status(project_id, generation_id)
                while not status.is_terminal:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (left is not None and _client_left(left)):
                        break
                    # Woken by the worker, NOTIFY or the sweep (generation/watch.py); no
                    # polling. Only changes that may end the job wake it (not its claim, steps
                    # or previews), so a wake-up reads the whole view, the answer when the job
                    # has ended (one read where a status read and then the view were two);
                    # kept only if it has.
                    woken = await changes.wait(remaining)
                    if woken and not (left is not None and _client_left(left)):
                        view = await self.get(project_id, generation_id)  # NotFound: deleted
                        if view.generation.status.is_terminal:
                            return view
                        status = view.generation.status
                        del view
            finally:
                if left is not None:
                    left.cancel()
        client_left = left is not None and _client_left(left)
        if client_left and on_gone is not None:
            on_timeout = on_gone
        view = await self.get(project_id, generation_id)  # NotFound when deleted meanwhile
        if view.generation.status.is_terminal:
            return view
        if on_timeout is OnTimeout.CANCEL:
            try:
                view = await self.cancel(project_id, generation_id)
            except Conflict:  # it finished in the meantime
                return await self.get(project_id, generation_id)
        view.timed_out, view.client_left = True, client_left
        return view

    async def create_and_wait(
        self,
        principal: Principal,
        request: GenerationRequest,
        timeout: float,
        on_timeout: OnTimeout,
        idempotency_key: str | None = None,
        gone: Callable[[], Awaitable[object]] | None = None,
        on_gone: OnTimeout | None = None,
    ) -> tuple[GenerationView, bool]:
        """Create, then wait for the result: what synchronous dialects answer with."""
        view, created = await self.create(principal, request, idempotency_key)
        project_id, generation_id, known = (
            view.generation.project_id,
            view.generation.id,
            view.known(),
        )
        del view  # the waiter holds ids, not the rows (see `wait`)
        return (
            await self.wait(project_id, generation_id, timeout, on_timeout, gone, known, on_gone),
            created,
        )

    async def outputs_page(
        self, project_id: str, filters: OutputFilter, cursor: str | None, per_page: int
    ) -> OutputsPage:
        """Generated images with their generation, newest first by default, cursor-paged."""
        async with self.rt.db.read() as session:
            repo = GenerationRepository(session)
            rows, total, next_cursor = await repo.outputs_page(
                project_id, filters, cursor, per_page
            )
            org_slug, project_slug = await repo.project_slugs(project_id)
        return OutputsPage(rows, total, next_cursor, org_slug, project_slug)

    async def balance(self, project_id: str) -> int | None:
        """Credits left (None: unlimited)."""
        async with self.rt.db.read() as session:
            return await Credits(session).balance(project_id)

    async def fleet(self, fresh: timedelta) -> tuple[dict[str, int], list[WorkerRecord]]:
        """Jobs pending and processing, and the workers heard from within `fresh` (readiness)."""
        async with self.rt.db.read() as session:
            counts = await GenerationRepository(session).status_counts()
            return counts, await WorkerRepository(session).live(utcnow() - fresh)

    async def gauges(
        self, fresh: timedelta
    ) -> tuple[list[tuple[str, str, int]], list[WorkerRecord]]:
        """Queue depth by status and model, and the workers heard from within `fresh`."""
        async with self.rt.db.read() as session:
            depth = await GenerationRepository(session).queue_by_model()
            return depth, await WorkerRepository(session).live(utcnow() - fresh)

    async def page(self, project_id: str, filters: ListFilter) -> tuple[list[GenerationView], int]:
        async with self.rt.db.read() as session:
            repo = GenerationRepository(session)
            rows, total = await repo.page(project_id, filters)
            images = await ImageRepository(session).by_ids(
                [i for g in rows for i in g.output_ids() + g.reference_ids()]
            )
            org_slug, project_slug = await repo.project_slugs(project_id)
        views = []
        for g in rows:
            outputs = [images[i] for i in g.output_ids() if i in images]
            refs = [images[i] for i in g.reference_ids() if i in images]
            views.append(
                GenerationView(
                    g, outputs[0] if outputs else None, org_slug, project_slug, outputs, refs
                )
            )
        return views, total

    # Update / regenerate -----------------------------------------------------------------

    async def update(
        self, project_id: str, generation_id: str, changes: dict[str, Any]
    ) -> GenerationView:
        """prompt/aspectRatio re-run the job into the same image; flowId/meta touch only the row."""
        current = (await self.get(project_id, generation_id)).generation
        storable_text(changes.get("prompt"), "prompt")
        prompt_changed = "prompt" in changes and changes["prompt"] != current.original_prompt
        ratio_changed = (
            "aspect_ratio" in changes and changes["aspect_ratio"] != current.aspect_ratio
        )
        new_prompt: tuple[str, str | None] | None = None
        if prompt_changed or ratio_changed:
            # Before the enhancer (an LLM call the operator pays for): what the re-run's write
            # would refuse anyway.
            await self._check_affordable(project_id, current.num_outputs)
            async with self.rt.db.read() as session:
                await Quotas(session).admit(
                    project_id, current.end_user_id, count=False, rerun=current.id
                )
        if prompt_changed:
            new_prompt = await self._enhance(
                changes["prompt"], current.auto_enhance, current.enhancement_template or "general"
            )
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(
                project_id, generation_id, lock=True
            )
            if generation is None:
                raise GenerationNotFound(generation_id)
            if "flow_id" in changes:
                images = ImageRepository(session)
                if changes["flow_id"] is not None:
                    await ensure_flow(images, project_id, changes["flow_id"])
                # The outputs move with their generation: the old flow no longer owns them.
                await images.move_to_flow(
                    project_id, generation.output_ids(), generation.flow_id, changes["flow_id"]
                )
                generation.flow_id = changes["flow_id"]
            if changes.get("meta") is not None:
                generation.meta = dict(changes["meta"])
            if new_prompt is not None:
                generation.original_prompt = changes["prompt"]
                generation.prompt, generation.enhanced_by = new_prompt
            if ratio_changed:
                spec = self.rt.registry.get(generation.model_id)
                generation.aspect_ratio = changes["aspect_ratio"]
                generation.width, generation.height = size_for(spec.family, changes["aspect_ratio"])
            stale: list[str] = []
            if prompt_changed or ratio_changed:
                stale = await self._requeue(session, generation)
            generation.updated_at = utcnow()
            view = await self._view(session, generation)
        if prompt_changed or ratio_changed:
            self.rt.notifier.work_queued()
        await delete_quietly(self.rt.store, stale)
        return view

    async def regenerate(self, project_id: str, generation_id: str) -> GenerationView:
        """Re-run with the stored parameters (a fresh seed unless the caller pinned one)."""
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(
                project_id, generation_id, lock=True
            )
            if generation is None:
                raise GenerationNotFound(generation_id)
            stale = await self._requeue(session, generation)
            view = await self._view(session, generation)
        self.rt.notifier.work_queued()
        await delete_quietly(self.rt.store, stale)
        return view

    async def _requeue(self, session: AsyncSession, generation: Generation) -> list[str]:
        """Back to pending under a new job version, so a still-running old attempt is discarded.
        A new run is new work: it is charged like a new request; a run it supersedes before that
        run delivered is refunded. The stream that asked for previews is over: the new run makes
        none, and the old ones' keys are returned to delete after commit."""
        stale: list[str] = []
        if generation.previews:
            slugs = await GenerationRepository(session).project_slugs(generation.project_id)
            stale = preview_keys(*slugs, generation.id, generation.previews)
            generation.previews = 0
        # A re-run is a generation like any other for the plan: it counts against the month's
        # quota and the concurrency cap (creating one job and regenerating it for ever used to
        # be a way around both).
        await Quotas(session).admit(
            generation.project_id, generation.end_user_id, rerun=generation.id
        )
        credits = Credits(session)
        if generation.status is not GenerationStatus.SUCCESS:
            await credits.refund_run(generation)
        generation.job_version += 1
        generation.status = GenerationStatus.PENDING
        generation.worker_id = None
        generation.lease_expires_at = None
        generation.retry_count = 0
        generation.error_message = None
        generation.progress_step = None
        generation.progress_total = None
        generation.previews_ready = 0
        generation.processing_time_ms = None
        generation.started_at = None
        generation.completed_at = None
        generation.seed = pick_seed(generation.seed_requested)
        await credits.charge_run(generation)
        return stale

    async def cancel(self, project_id: str, generation_id: str) -> GenerationView:
        """Cancel a pending or running job; a running one stops at its next step."""
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get(project_id, generation_id, lock=True)
            if generation is None:
                raise GenerationNotFound(generation_id)
            if not await repo.cancel(generation, utcnow()):
                raise Conflict(
                    f"Generation '{generation_id}' already ended ({generation.status.value})",
                    code="GENERATION_ALREADY_FINISHED",
                )
            await Credits(session).refund_run(generation)
            hooks = await announce(self.rt, session, generation_id, events.CANCELLED)
            metrics.JOBS.labels(generation.model_id, "cancelled").inc()
            view = await self._view(session, generation)
        self.rt.notifier.generation_changed(generation_id)
        if hooks:
            self.rt.notifier.webhooks_queued()
        return view

    # Delete ------------------------------------------------------------------------------

    async def delete(self, project_id: str, generation_id: str) -> None:
        """Hard-delete the generation and its images, except images with a project alias."""
        doomed: list[str] = []
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get(project_id, generation_id, lock=True)
            if generation is None:
                raise GenerationNotFound(generation_id)
            if generation.status is not GenerationStatus.SUCCESS:
                await Credits(session).refund_run(generation)  # it will never deliver now
            images = ImageRepository(session)
            for image in (await images.by_ids(generation.output_ids())).values():
                if image.project_id != project_id:
                    continue
                if image.alias is None:
                    doomed.append(image.storage_key)
                    await images.delete(image)
                else:
                    image.generation_id = None
            org_slug, project_slug = await repo.project_slugs(project_id)
            doomed += preview_keys(org_slug, project_slug, generation.id, generation.previews)
            await repo.delete_generation(generation)
        self.rt.notifier.generation_changed(generation_id)  # waiters learn it is gone
        # After commit: a failed file delete leaves an orphan file, never a dangling row.
        for key in doomed:
            await self.rt.store.delete(key)
