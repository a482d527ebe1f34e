"""Live URL rules: scopes (created on first use), the prompt cache, and the limits on misses
(per client IP and per scope). Misses go through the same queue as every other generation."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from limits import parse
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.auth.repository import TenancyRepository
from imagesmith.auth.service import Principal
from imagesmith.db.base import utcnow
from imagesmith.errors import Conflict, Forbidden, ImagesmithError, NotFound, ValidationFailed
from imagesmith.generation.schemas import GenerationRequest, GenerationView
from imagesmith.generation.service import GenerationService
from imagesmith.limits.rate import RateLimited, ip_bucket
from imagesmith.models import GenerationStatus, KeyType, LiveScope, Project, PromptCacheEntry
from imagesmith.runtime import Runtime

SLUG = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
LIVE_KEY = "live-url"


class ScopeNotFound(NotFound):
    code = "SCOPE_NOT_FOUND"


def check_slug(slug: str) -> None:
    if not SLUG.match(slug):
        raise ValidationFailed(
            f"Scope '{slug[:80]}' must be 1-64 letters, digits, '-' or '_'",
            code="SCOPE_INVALID_FORMAT",
        )


@dataclass(frozen=True)
class LiveRequest:
    prompt: str
    aspect_ratio: str
    auto_enhance: bool
    template: str

    def cache_key(self, project_id: str, scope: str) -> str:
        fields = [
            project_id,
            scope,
            self.prompt,
            self.aspect_ratio,
            self.auto_enhance,
            self.template,
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass
class LiveResult:
    view: GenerationView
    cache_status: str  # "HIT" or "MISS"
    hit_count: int


class ScopeRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def get(self, project_id: str, slug: str) -> LiveScope | None:
        result = await self.session.execute(
            select(LiveScope).where(LiveScope.project_id == project_id, LiveScope.slug == slug)
        )
        return result.scalar_one_or_none()

    async def page(
        self, project_id: str, slug: str | None, limit: int, offset: int
    ) -> tuple[list[LiveScope], int]:
        conditions: list[Any] = [LiveScope.project_id == project_id]
        if slug:
            conditions.append(LiveScope.slug == slug)
        total = (
            await self.session.execute(select(func.count(LiveScope.id)).where(*conditions))
        ).scalar_one()
        rows = await self.session.execute(
            select(LiveScope)
            .where(*conditions)
            .order_by(LiveScope.created_at.desc())
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total)

    async def cached(self, project_id: str, key: str) -> PromptCacheEntry | None:
        result = await self.session.execute(
            select(PromptCacheEntry).where(
                PromptCacheEntry.project_id == project_id, PromptCacheEntry.cache_key == key
            )
        )
        return result.scalar_one_or_none()

    async def entries(self, scope_id: str) -> list[PromptCacheEntry]:
        result = await self.session.execute(
            select(PromptCacheEntry).where(PromptCacheEntry.scope_id == scope_id)
        )
        return list(result.scalars())


def set_project_live(project: Project, enabled: bool, open_scopes: list[str] | None) -> str:
    """Turn a project's live URLs on or off; `open_scopes` (when given) replaces the scopes
    strangers may start by first use. Returns a one-line summary."""
    for slug in open_scopes or []:
        check_slug(slug)
    project.live_enabled = enabled
    if open_scopes is not None:
        project.live_open_scopes = sorted(set(open_scopes))
    opened = ", ".join(project.live_open_scopes or []) or "none (key holders create scopes)"
    return f"live URLs {'on' if enabled else 'off'}; open scopes: {opened}"


class LiveService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    # Scopes -------------------------------------------------------------------------------

    async def create_scope(self, project_id: str, slug: str, values: dict[str, Any]) -> LiveScope:
        check_slug(slug)
        try:
            async with self.rt.db.transaction() as session:
                if await ScopeRepository(session).get(project_id, slug) is not None:
                    raise Conflict(f"Scope '{slug}' already exists", code="SCOPE_ALREADY_EXISTS")
                scope = self._new_scope(project_id, slug, values)
                session.add(scope)
                await session.flush()
                return scope
        except IntegrityError:
            raise Conflict(f"Scope '{slug}' already exists", code="SCOPE_ALREADY_EXISTS") from None

    def _new_scope(self, project_id: str, slug: str, values: dict[str, Any]) -> LiveScope:
        return LiveScope(
            project_id=project_id,
            slug=slug,
            allow_new_generations=values.get("allow_new_generations", True),
            new_generations_limit=values.get(
                "new_generations_limit", self.rt.settings.live_scope_limit
            ),
            current_generations=0,
            meta=dict(values.get("meta") or {}),
        )

    async def get_scope(self, project_id: str, slug: str) -> LiveScope:
        async with self.rt.db.transaction() as session:
            scope = await ScopeRepository(session).get(project_id, slug)
        if scope is None:
            raise ScopeNotFound(f"Scope '{slug}' not found in this project")
        return scope

    async def list_scopes(
        self, project_id: str, slug: str | None, limit: int, offset: int
    ) -> tuple[list[LiveScope], int]:
        async with self.rt.db.transaction() as session:
            return await ScopeRepository(session).page(project_id, slug, limit, offset)

    async def update_scope(self, project_id: str, slug: str, values: dict[str, Any]) -> LiveScope:
        async with self.rt.db.transaction() as session:
            scope = await ScopeRepository(session).get(project_id, slug)
            if scope is None:
                raise ScopeNotFound(f"Scope '{slug}' not found in this project")
            for name in ("allow_new_generations", "new_generations_limit"):
                if values.get(name) is not None:
                    setattr(scope, name, values[name])
            if values.get("meta") is not None:
                scope.meta = dict(values["meta"])
            scope.updated_at = utcnow()
            await session.flush()
            return scope

    async def delete_scope(self, project_id: str, slug: str) -> None:
        """The scope and its cache entries go; generated images stay in the library."""
        async with self.rt.db.transaction() as session:
            repo = ScopeRepository(session)
            scope = await repo.get(project_id, slug)
            if scope is None:
                raise ScopeNotFound(f"Scope '{slug}' not found in this project")
            for entry in await repo.entries(scope.id):
                await session.delete(entry)
            await session.delete(scope)

    async def regenerate_scope(self, project_id: str, slug: str, image_id: str | None) -> list[str]:
        """Re-run one cached image (by image id) or every image of the scope, in place."""
        async with self.rt.db.transaction() as session:
            repo = ScopeRepository(session)
            scope = await repo.get(project_id, slug)
            if scope is None:
                raise ScopeNotFound(f"Scope '{slug}' not found in this project")
            generation_ids = [entry.generation_id for entry in await repo.entries(scope.id)]
        service = GenerationService(self.rt)
        done = []
        for generation_id in generation_ids:
            view = await service.get(project_id, generation_id)
            if image_id is not None and image_id not in {i.id for i in view.images}:
                continue
            await service.regenerate(project_id, generation_id)
            done.append(generation_id)
        if image_id is not None and not done:
            raise ValidationFailed(
                f"Image '{image_id}' is not in scope '{slug}'", code="IMAGE_NOT_IN_SCOPE"
            )
        return done

    # The live GET ---------------------------------------------------------------------------

    async def serve(
        self,
        principal: Principal,
        scope_slug: str,
        request: LiveRequest,
        client_ip: str,
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> LiveResult:
        """A public GET. Every refusal happens before anything is written: live URLs off for the
        project, a scope that neither exists nor is open to strangers, a closed or full scope,
        the client's per-IP budget. A client that hangs up (`gone()` returns) ends its wait;
        the job runs on, and the URL's next request finds it."""
        check_slug(scope_slug)
        project_id = principal.require_project()
        key = request.cache_key(project_id, scope_slug)
        service = GenerationService(self.rt)
        # A read: strangers send these, and must not queue for SQLite's write lock.
        async with self.rt.db.read() as session:
            project = await TenancyRepository(session).project_by_id(project_id)
            if project is None or not project.live_enabled:
                raise Forbidden(
                    "Live URLs are off for this project; an operator turns them on with "
                    "`imagesmith live enable` (or PUT /api/admin/projects/{org}/{project}/live)",
                    code="LIVE_URLS_DISABLED",
                )
            repo = ScopeRepository(session)
            scope = await repo.get(project_id, scope_slug)
            if scope is None and scope_slug not in (project.live_open_scopes or []):
                raise ScopeNotFound(
                    f"No live scope '{scope_slug}' in this project: a key holder creates it "
                    "(POST /api/v1/live/scopes), or an operator opens it to first use"
                )
            entry = await repo.cached(project_id, key)
            cached_id = entry.generation_id if entry is not None else None
        if cached_id is not None:
            view = await self._existing(service, project_id, cached_id)
            if view is not None:
                status = "HIT" if view.generation.status is GenerationStatus.SUCCESS else "MISS"
                view = await service.wait(
                    project_id, cached_id, self.rt.settings.live_wait_seconds, gone=gone
                )
                if view.client_left:  # nobody was served: not a hit
                    return LiveResult(view, status, 0)
                hits = await self._count_hit(project_id, key)
                return LiveResult(view, status, hits)
        # A miss: it costs a generation, so it is limited.
        allowed = scope.allow_new_generations if scope is not None else True
        used = scope.current_generations if scope is not None else 0
        limit = (
            scope.new_generations_limit if scope is not None else self.rt.settings.live_scope_limit
        )
        if not allowed:
            raise scope_closed(scope_slug)
        if used >= limit:  # before the per-IP budget is spent; `_take_slot` decides for good
            raise scope_full(scope_slug, limit)
        # Per project and client network (an IPv6 client is its /64): one tenant's traffic never
        # spends another tenant's budget.
        await self.rt.rate_limiter.hit_item(
            parse(self.rt.settings.live_ip_limit),
            "live-ip",
            project_id,
            ip_bucket(client_ip),
            what=f"new live generations from {ip_bucket(client_ip)}",
        )
        # The scope's slot is taken before the generation is made, in one conditional write: a
        # burst of misses that all read `used < limit` above used to all generate.
        scope_id = await self._take_slot(project_id, scope_slug)
        try:
            view, _ = await service.create(
                principal,
                GenerationRequest(
                    prompt=request.prompt,
                    aspect_ratio=request.aspect_ratio,
                    auto_enhance=request.auto_enhance,
                    template=request.template,
                    flow_id=None,
                    meta={"scope": scope_slug, "isLiveUrl": True},
                ),
            )
        except Exception:
            await self._give_slot(scope_id)
            raise
        generation_id = view.generation.id
        try:
            async with self.rt.db.transaction() as session:
                repo = ScopeRepository(session)
                if entry is not None:  # the old entry pointed at a failed or deleted generation
                    stale = await repo.cached(project_id, key)
                    if stale is not None:
                        await session.delete(stale)
                        await session.flush()
                session.add(
                    PromptCacheEntry(
                        project_id=project_id,
                        scope_id=scope_id,
                        cache_key=key,
                        generation_id=generation_id,
                        hit_count=0,
                    )
                )
        except IntegrityError:
            # The same URL missed twice at once: keep the other request's job, drop ours.
            await service.cancel(project_id, generation_id)
            await self._give_slot(scope_id)
            return await self.serve(principal, scope_slug, request, client_ip, gone)
        view = await service.wait(
            project_id, generation_id, self.rt.settings.live_wait_seconds, gone=gone
        )
        return LiveResult(view, "MISS", 0)

    async def _take_slot(self, project_id: str, slug: str) -> str:
        """Count one new generation against the scope (created on an open scope's first use),
        or refuse: closed, or its newGenerationsLimit used. Returns the scope's id."""
        for attempt in range(2):
            try:
                async with self.rt.db.transaction() as session:
                    scope = await ScopeRepository(session).get(project_id, slug)
                    if scope is None:  # an open scope's first use creates it
                        scope = self._new_scope(project_id, slug, {})
                        session.add(scope)
                        await session.flush()
                    if not scope.allow_new_generations:
                        raise scope_closed(slug)
                    taken = await session.execute(
                        update(LiveScope)
                        .where(
                            LiveScope.id == scope.id,
                            LiveScope.current_generations < LiveScope.new_generations_limit,
                        )
                        .values(
                            current_generations=LiveScope.current_generations + 1,
                            last_generated_at=utcnow(),
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if taken.rowcount == 0:  # type: ignore[attr-defined]
                        raise scope_full(slug, scope.new_generations_limit)
                    return scope.id
            except IntegrityError:  # two first uses of an open scope at once: it exists now
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _give_slot(self, scope_id: str) -> None:
        """A taken slot whose generation was not made (or was dropped) comes back."""
        async with self.rt.db.transaction() as session:
            await session.execute(
                update(LiveScope)
                .where(LiveScope.id == scope_id, LiveScope.current_generations > 0)
                .values(current_generations=LiveScope.current_generations - 1)
                .execution_options(synchronize_session=False)
            )

    async def _existing(
        self, service: GenerationService, project_id: str, generation_id: str
    ) -> GenerationView | None:
        """The cached generation, unless it failed, was cancelled or deleted (then: a miss)."""
        try:
            view = await service.get(project_id, generation_id)
        except ImagesmithError:
            return None
        bad = (GenerationStatus.FAILED, GenerationStatus.CANCELLED)
        if view.generation.status in bad or (
            view.generation.status is GenerationStatus.SUCCESS and view.image is None
        ):
            return None
        return view

    async def _count_hit(self, project_id: str, key: str) -> int:
        async with self.rt.db.transaction() as session:
            entry = await ScopeRepository(session).cached(project_id, key)
            if entry is None:
                return 0
            entry.hit_count += 1
            entry.last_hit_at = utcnow()
            return entry.hit_count


def scope_closed(slug: str) -> Forbidden:
    return Forbidden(
        f"Scope '{slug}' does not allow new generations (allowNewGenerations=false)",
        code="SCOPE_GENERATION_DISABLED",
    )


def scope_full(slug: str, limit: int) -> RateLimited:
    return RateLimited(
        f"Scope '{slug}' used its {limit} new generations; "
        "raise newGenerationsLimit (PUT /api/v1/live/scopes/{slug}) to allow more",
        code="SCOPE_LIMIT_REACHED",
        headers={"Retry-After": "3600"},
    )


def live_principal(org_id: str, org_slug: str, project_id: str, project_slug: str) -> Principal:
    """Live URLs are public: the project is known from the path, no key is involved."""
    return Principal(
        api_key_id=LIVE_KEY,
        key_type=KeyType.PROJECT,
        organization_id=org_id,
        organization_slug=org_slug,
        project_id=project_id,
        project_slug=project_slug,
        key_holder=False,
    )
