"""`/api/v1/live/scopes`: manage the scopes live URLs generate into."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.dialect import keyed_responses
from imagesmith.api.links import iso
from imagesmith.api.native.auth import PrincipalDep
from imagesmith.api.native.render import MAX_OFFSET, paginated
from imagesmith.api.native.schemas import Meta
from imagesmith.live.service import LiveService
from imagesmith.models import LiveScope

router = APIRouter(prefix="/api/v1/live/scopes", tags=["live"])


def render_scope(scope: LiveScope) -> dict[str, Any]:
    return {
        "id": scope.id,
        "slug": scope.slug,
        "allowNewGenerations": scope.allow_new_generations,
        "newGenerationsLimit": scope.new_generations_limit,
        "currentGenerations": scope.current_generations,
        "lastGeneratedAt": iso(scope.last_generated_at),
        "meta": dict(scope.meta or {}),
        "createdAt": iso(scope.created_at),
        "updatedAt": iso(scope.updated_at),
    }


class ScopeFields(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    allow_new_generations: StrictBool | None = Field(None, alias="allowNewGenerations")
    new_generations_limit: int | None = Field(None, alias="newGenerationsLimit", ge=0, le=1_000_000)
    meta: Meta | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ScopeCreate(ScopeFields):
    slug: str = Field(..., min_length=1, max_length=64)


@router.post("", status_code=201, responses=keyed_responses(400, 409))
async def create_scope(
    runtime: RuntimeDep, principal: PrincipalDep, body: Annotated[ScopeCreate, Body()]
) -> dict[str, Any]:
    """Create a scope (scopes are also created on a live URL's first use)."""
    scope = await LiveService(runtime).create_scope(
        principal.require_project(), body.slug, body.values()
    )
    return {"success": True, "data": render_scope(scope)}


@router.get("", responses=keyed_responses(400))
async def list_scopes(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    slug: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """The project's live scopes."""
    scopes, total = await LiveService(runtime).list_scopes(
        principal.require_project(), slug, limit, offset
    )
    return paginated([render_scope(s) for s in scopes], total, limit, offset)


@router.get("/{slug}", responses=keyed_responses(404))
async def get_scope(runtime: RuntimeDep, principal: PrincipalDep, slug: str) -> dict[str, Any]:
    """One scope with its counters."""
    scope = await LiveService(runtime).get_scope(principal.require_project(), slug)
    return {"success": True, "data": render_scope(scope)}


@router.put("/{slug}", responses=keyed_responses(400, 404))
async def update_scope(
    runtime: RuntimeDep, principal: PrincipalDep, slug: str, body: Annotated[ScopeFields, Body()]
) -> dict[str, Any]:
    """Change allowNewGenerations, newGenerationsLimit or meta."""
    scope = await LiveService(runtime).update_scope(
        principal.require_project(), slug, body.values()
    )
    return {"success": True, "data": render_scope(scope)}


@router.delete("/{slug}", responses=keyed_responses(404))
async def delete_scope(runtime: RuntimeDep, principal: PrincipalDep, slug: str) -> dict[str, Any]:
    """Delete the scope and its cache (its images stay in the library)."""
    await LiveService(runtime).delete_scope(principal.require_project(), slug)
    return {"success": True, "data": {"slug": slug}}


class RegenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    image_id: str | None = Field(None, alias="imageId")


@router.post("/{slug}/regenerate", responses=keyed_responses(400, 404))
async def regenerate_scope(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    slug: str,
    body: Annotated[RegenerateBody | None, Body()] = None,
) -> dict[str, Any]:
    """Re-run one image of the scope (imageId) or all of them, in place (same URLs)."""
    done = await LiveService(runtime).regenerate_scope(
        principal.require_project(), slug, body.image_id if body else None
    )
    return {"success": True, "data": {"regenerated": done}}
