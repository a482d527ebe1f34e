"""Generation rules: resolve defaults, enqueue (commit the row), update in place, delete, wait."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy.exc import IntegrityError

from imagesmith.auth.service import Principal
from imagesmith.db.base import utcnow
from imagesmith.engines.registry import ModelSpec, UnknownModel
from imagesmith.errors import AliasConflict, Conflict, GenerationNotFound, ValidationFailed
from imagesmith.generation.aspect import ASPECT_RATIOS, size_for
from imagesmith.generation.repository import GenerationRepository, ListFilter
from imagesmith.generation.schemas import NEW_FLOW, GenerationRequest, GenerationView
from imagesmith.models import Flow, Generation, GenerationStatus
from imagesmith.runtime import Runtime

MIN_SIDE, MAX_SIDE = 64, 2048
RANDOM_SEED_LIMIT = 2**32


def request_fingerprint(request: GenerationRequest) -> str:
    payload = json.dumps(asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class GenerationService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    # Create ------------------------------------------------------------------------------

    def resolve_model(self, model_id: str | None) -> ModelSpec:
        try:
            return self.rt.registry.get(model_id or self.rt.settings.default_model)
        except UnknownModel as exc:
            raise ValidationFailed(f"model: {exc}") from None

    def resolve_size(self, spec: ModelSpec, request: GenerationRequest) -> tuple[int, int]:
        if request.width is None and request.height is None:
            ratio = request.aspect_ratio or "1:1"
            if ratio not in ASPECT_RATIOS:
                raise ValidationFailed(
                    f"aspectRatio '{ratio}' is not one of: {', '.join(ASPECT_RATIOS)}"
                )
            return size_for(spec.family, ratio)
        width, height = request.width, request.height
        if width is None or height is None:
            raise ValidationFailed("Give both width and height, or neither")
        for name, value in (("width", width), ("height", height)):
            if value % 8 or not MIN_SIDE <= value <= MAX_SIDE:
                raise ValidationFailed(
                    f"{name} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}, got {value}"
                )
        return width, height

    def resolve_steps(self, spec: ModelSpec, steps: int | None) -> int:
        value = steps if steps is not None else spec.default_steps
        if not spec.min_steps <= value <= spec.max_steps:
            raise ValidationFailed(
                f"steps must be between {spec.min_steps} and {spec.max_steps} for model "
                f"'{spec.id}', got {value}"
            )
        return value

    async def create(
        self, principal: Principal, request: GenerationRequest, idempotency_key: str | None = None
    ) -> tuple[GenerationView, bool]:
        """Commit a pending generation (the queued job); returns (view, created)."""
        project_id = principal.require_project()
        fingerprint = request_fingerprint(request)
        if idempotency_key is not None:
            replay = await self._replay(project_id, idempotency_key, fingerprint)
            if replay is not None:
                return replay, False
        spec = self.resolve_model(request.model_id)
        width, height = self.resolve_size(spec, request)
        steps = self.resolve_steps(spec, request.steps)
        await self._check_alias_free(project_id, request.alias)
        prompt, enhanced_by = await self._enhance(
            request.prompt, request.auto_enhance, request.template
        )
        flow_id = str(uuid.uuid4()) if request.flow_id == NEW_FLOW else request.flow_id
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
            model_id=spec.id,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=(
                request.guidance_scale
                if request.guidance_scale is not None
                else spec.default_guidance
            ),
            scheduler=request.scheduler or spec.default_scheduler,
            seed=request.seed if request.seed is not None else secrets.randbelow(RANDOM_SEED_LIMIT),
            seed_requested=request.seed,
            reference_images=list(request.reference_images),
            alias=request.alias,
            flow_alias=request.flow_alias,
            meta=dict(request.meta),
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            status=GenerationStatus.PENDING,
        )
        try:
            async with self.rt.db.transaction() as session:
                repo = GenerationRepository(session)
                if flow_id is not None:
                    await self._ensure_flow(
                        session, project_id, flow_id, eager=bool(request.flow_alias)
                    )
                await repo.add(generation)
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
        return GenerationView(generation, None, org_slug, project_slug), True

    async def _replay(self, project_id: str, key: str, fingerprint: str) -> GenerationView | None:
        async with self.rt.db.transaction() as session:
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
        enhanced = await self.rt.enhancer.enhance(prompt, template)
        return enhanced.prompt, enhanced.method

    async def _check_alias_free(self, project_id: str, alias: str | None) -> None:
        if alias is None:
            return
        async with self.rt.db.transaction() as session:
            if await GenerationRepository(session).image_by_alias(project_id, alias) is not None:
                raise AliasConflict(
                    f"Alias '{alias}' is already used by another image in this project"
                )

    async def _ensure_flow(self, session: Any, project_id: str, flow_id: str, eager: bool) -> None:
        flow = await session.get(Flow, flow_id)
        if flow is not None and flow.project_id != project_id:
            raise ValidationFailed(f"flowId '{flow_id}' does not belong to this project")
        if flow is None and eager:
            session.add(Flow(id=flow_id, project_id=project_id, aliases={}, meta={}))

    # Read --------------------------------------------------------------------------------

    async def _view(self, session: Any, generation: Generation) -> GenerationView:
        repo = GenerationRepository(session)
        image = None
        if generation.output_image_id:
            image = await repo.image(generation.project_id, generation.output_image_id)
        org_slug, project_slug = await repo.project_slugs(generation.project_id)
        return GenerationView(generation, image, org_slug, project_slug)

    async def get(self, project_id: str, generation_id: str) -> GenerationView:
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            return await self._view(session, generation)

    async def wait(self, project_id: str, generation_id: str, timeout: float) -> GenerationView:
        """Block until the job is terminal or `timeout` passes; remote workers cost one poll."""
        deadline = time.monotonic() + min(timeout, self.rt.settings.max_wait_seconds)
        while True:
            view = await self.get(project_id, generation_id)
            remaining = deadline - time.monotonic()
            if view.generation.status.is_terminal or remaining <= 0:
                return view
            await self.rt.notifier.wait_changed(generation_id, min(remaining, 0.5))

    async def page(self, project_id: str, filters: ListFilter) -> tuple[list[GenerationView], int]:
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            rows, total = await repo.page(project_id, filters)
            images = await repo.images_by_id([g.output_image_id for g in rows if g.output_image_id])
            org_slug, project_slug = await repo.project_slugs(project_id)
        views = [
            GenerationView(g, images.get(g.output_image_id or ""), org_slug, project_slug)
            for g in rows
        ]
        return views, total

    # Update / regenerate -----------------------------------------------------------------

    async def update(
        self, project_id: str, generation_id: str, changes: dict[str, Any]
    ) -> GenerationView:
        """prompt/aspectRatio re-run the job into the same image; flowId/meta touch only the row."""
        current = (await self.get(project_id, generation_id)).generation
        prompt_changed = "prompt" in changes and changes["prompt"] != current.original_prompt
        ratio_changed = (
            "aspect_ratio" in changes and changes["aspect_ratio"] != current.aspect_ratio
        )
        new_prompt: tuple[str, str | None] | None = None
        if prompt_changed:
            new_prompt = await self._enhance(
                changes["prompt"], current.auto_enhance, current.enhancement_template or "general"
            )
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            if "flow_id" in changes:
                if changes["flow_id"] is not None:
                    await self._ensure_flow(session, project_id, changes["flow_id"], eager=True)
                generation.flow_id = changes["flow_id"]
            if changes.get("meta") is not None:
                generation.meta = dict(changes["meta"])
            if new_prompt is not None:
                generation.original_prompt = changes["prompt"]
                generation.prompt, generation.enhanced_by = new_prompt
            if ratio_changed:
                spec = self.resolve_model(generation.model_id)
                generation.aspect_ratio = changes["aspect_ratio"]
                generation.width, generation.height = size_for(spec.family, changes["aspect_ratio"])
            if prompt_changed or ratio_changed:
                self._requeue(generation)
            generation.updated_at = utcnow()
            view = await self._view(session, generation)
        if prompt_changed or ratio_changed:
            self.rt.notifier.work_queued()
        return view

    async def regenerate(self, project_id: str, generation_id: str) -> GenerationView:
        """Re-run with the stored parameters (a fresh seed unless the caller pinned one)."""
        async with self.rt.db.transaction() as session:
            generation = await GenerationRepository(session).get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            self._requeue(generation)
            view = await self._view(session, generation)
        self.rt.notifier.work_queued()
        return view

    def _requeue(self, generation: Generation) -> None:
        """Back to pending under a new job version, so a still-running old attempt is discarded."""
        generation.job_version += 1
        generation.status = GenerationStatus.PENDING
        generation.worker_id = None
        generation.lease_expires_at = None
        generation.retry_count = 0
        generation.error_message = None
        generation.progress_step = None
        generation.progress_total = None
        generation.processing_time_ms = None
        generation.started_at = None
        generation.completed_at = None
        if generation.seed_requested is None:
            generation.seed = secrets.randbelow(RANDOM_SEED_LIMIT)
        else:
            generation.seed = generation.seed_requested

    # Delete ------------------------------------------------------------------------------

    async def delete(self, project_id: str, generation_id: str) -> None:
        """Hard-delete the generation and its image, unless the image carries a project alias."""
        doomed_key: str | None = None
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            if generation.output_image_id:
                image = await repo.image(project_id, generation.output_image_id)
                if image is not None and image.alias is None:
                    doomed_key = image.storage_key
                    await repo.delete_image(image)
                elif image is not None:
                    image.generation_id = None
            await repo.delete_generation(generation)
        if doomed_key is not None:
            # After commit: a failed file delete leaves an orphan file, never a dangling row.
            await self.rt.store.delete(doomed_key)
