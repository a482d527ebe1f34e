"""Generation rules: resolve defaults, enqueue (commit the row), update in place, delete, wait."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy.exc import IntegrityError

from imagesmith.auth.service import Principal
from imagesmith.db.base import utcnow
from imagesmith.engines.registry import ModelSpec, UnknownModel
from imagesmith.errors import AliasConflict, Conflict, GenerationNotFound, ImageNotFound
from imagesmith.generation.aspect import size_for
from imagesmith.generation.init_image import InitImages
from imagesmith.generation.parameters import (
    EngineParams,
    ParamError,
    ParamInput,
    pick_seed,
    resolve_params,
)
from imagesmith.generation.repository import GenerationRepository, ListFilter
from imagesmith.generation.schemas import NEW_FLOW, GenerationRequest, GenerationView
from imagesmith.image.aliases import aliases_in_prompt, resolve_image
from imagesmith.image.repository import ImageRepository, ref_image_id
from imagesmith.image.service import ensure_flow
from imagesmith.limits.credits import Credits
from imagesmith.models import Generation, GenerationStatus, Image
from imagesmith.runtime import Runtime

MAX_REFERENCES = 3


def request_fingerprint(request: GenerationRequest) -> str:
    payload = json.dumps(asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def output_ids(generation: Generation) -> list[str]:
    ids = list(generation.output_image_ids or [])
    if not ids and generation.output_image_id:
        ids = [generation.output_image_id]
    return ids


def reference_ids(generation: Generation) -> list[str]:
    return [i for i in (ref_image_id(r) for r in generation.reference_images or []) if i]


class GenerationService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    # Create ------------------------------------------------------------------------------

    def resolve_model(self, request: GenerationRequest) -> ModelSpec:
        try:
            return self.rt.registry.get(request.model_id or self.rt.settings.default_model)
        except UnknownModel as exc:
            field = request.field_names.get("model", "model")
            raise ParamError(field, f"{field}: {exc}", kind="model") from None

    def resolve_params(self, spec: ModelSpec, request: GenerationRequest) -> EngineParams:
        return resolve_params(
            spec,
            ParamInput(
                aspect_ratio=request.aspect_ratio,
                width=request.width,
                height=request.height,
                steps=request.steps,
                guidance_scale=request.guidance_scale,
                scheduler=request.scheduler,
                num_outputs=request.num_outputs,
                prompt_strength=request.prompt_strength,
                has_init_image=request.init_image is not None,
            ),
            request.field_names,
        )

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
        spec = self.resolve_model(request)
        references = await self._references(project_id, request)
        if references and request.init_image is None:
            # Without an IP-Adapter configured, the first reference is the img2img init image.
            request.init_image = references[0].id
            if request.prompt_strength is None:
                request.prompt_strength = self.rt.settings.reference_strength
        params = self.resolve_params(spec, request)
        await self._check_alias_free(project_id, request.alias)
        init_key = None
        if request.init_image is not None:
            init_key = await InitImages(self.rt).resolve(principal, request)
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
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            scheduler=params.scheduler,
            seed=pick_seed(request.seed),
            seed_requested=request.seed if request.seed is not None and request.seed >= 0 else None,
            reference_images=[{"imageId": image.id, "alias": image.alias} for image in references],
            num_outputs=params.num_outputs,
            init_image_key=init_key,
            init_image_ref=request.init_image,
            prompt_strength=params.prompt_strength,
            credits_charged=params.num_outputs,
            dialect=request.dialect,
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
                remaining = await Credits(session).charge(project_id, params.num_outputs)
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
        view = GenerationView(generation, None, org_slug, project_slug)
        view.remaining_credits = remaining
        return view, True

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
        await ensure_flow(ImageRepository(session), project_id, flow_id)

    async def _references(self, project_id: str, request: GenerationRequest) -> list[Image]:
        """Explicit references first, then `@name` tokens of the prompt; merged, de-duplicated,
        at most 3. An unknown explicit reference is an error; an unknown prompt token is text."""
        flow_id = request.flow_id if request.flow_id not in (None, NEW_FLOW) else None
        found: list[Image] = []
        async with self.rt.db.transaction() as session:
            repo = ImageRepository(session)
            for ref in request.reference_images:
                image = await resolve_image(repo, project_id, ref, flow_id)
                if image is None:
                    raise ImageNotFound(f"referenceImages: no image '{ref}' in this project")
                if image.id not in {f.id for f in found}:
                    found.append(image)
            for token in aliases_in_prompt(request.prompt):
                image = await resolve_image(repo, project_id, token, flow_id)
                if image is not None and image.id not in {f.id for f in found}:
                    found.append(image)
        return found[:MAX_REFERENCES]

    # Read --------------------------------------------------------------------------------

    async def _view(self, session: Any, generation: Generation) -> GenerationView:
        repo = GenerationRepository(session)
        ids = output_ids(generation)
        refs = reference_ids(generation)
        found = await repo.images_by_id(ids + refs)
        images = [found[i] for i in ids if i in found]
        org_slug, project_slug = await repo.project_slugs(generation.project_id)
        view = GenerationView(
            generation,
            images[0] if images else None,
            org_slug,
            project_slug,
            images,
            [found[i] for i in refs if i in found],
        )
        view.remaining_credits = await Credits(session).balance(generation.project_id)
        return view

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
            images = await repo.images_by_id(
                [i for g in rows for i in output_ids(g) + reference_ids(g)]
            )
            org_slug, project_slug = await repo.project_slugs(project_id)
        views = []
        for g in rows:
            outputs = [images[i] for i in output_ids(g) if i in images]
            refs = [images[i] for i in reference_ids(g) if i in images]
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
                spec = self.rt.registry.get(generation.model_id)
                generation.aspect_ratio = changes["aspect_ratio"]
                generation.width, generation.height = size_for(spec.family, changes["aspect_ratio"])
            if prompt_changed or ratio_changed:
                await self._requeue(session, generation)
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
            await self._requeue(session, generation)
            view = await self._view(session, generation)
        self.rt.notifier.work_queued()
        return view

    async def _requeue(self, session: Any, generation: Generation) -> None:
        """Back to pending under a new job version, so a still-running old attempt is discarded.
        A new run is new work: it is charged like a new request."""
        await Credits(session).charge(generation.project_id, generation.num_outputs)
        generation.credits_charged += generation.num_outputs
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
        generation.seed = pick_seed(generation.seed_requested)

    async def cancel(self, project_id: str, generation_id: str) -> GenerationView:
        """Cancel a pending or running job; a running one stops at its next step."""
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            if not await repo.cancel(generation, utcnow()):
                raise Conflict(
                    f"Generation '{generation_id}' already ended ({generation.status.value})",
                    code="GENERATION_ALREADY_FINISHED",
                )
            view = await self._view(session, generation)
        self.rt.notifier.generation_changed(generation_id)
        return view

    # Delete ------------------------------------------------------------------------------

    async def delete(self, project_id: str, generation_id: str) -> None:
        """Hard-delete the generation and its images, except images with a project alias."""
        doomed: list[str] = []
        async with self.rt.db.transaction() as session:
            repo = GenerationRepository(session)
            generation = await repo.get(project_id, generation_id)
            if generation is None:
                raise GenerationNotFound(generation_id)
            for image in (await repo.images_by_id(output_ids(generation))).values():
                if image.project_id != project_id:
                    continue
                if image.alias is None:
                    doomed.append(image.storage_key)
                    await repo.delete_image(image)
                else:
                    image.generation_id = None
            await repo.delete_generation(generation)
        # After commit: a failed file delete leaves an orphan file, never a dangling row.
        for key in doomed:
            await self.rt.store.delete(key)
