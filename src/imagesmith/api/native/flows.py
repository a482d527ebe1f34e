"""`/api/v1/flows`: chained generations and their flow-scoped aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.dialect import keyed_responses
from imagesmith.api.links import image_links, iso
from imagesmith.api.native.auth import PrincipalDep
from imagesmith.api.native.images import render_image_record
from imagesmith.api.native.render import MAX_OFFSET, paginated, render_generation
from imagesmith.flow.service import FlowService, FlowView
from imagesmith.generation.schemas import GenerationView
from imagesmith.generation.service import GenerationService

router = APIRouter(prefix="/api/v1/flows", tags=["flows"])


def render_flow(view: FlowView) -> dict[str, Any]:
    flow = view.flow
    return {
        "id": flow.id,
        "projectId": flow.project_id,
        "aliases": dict(flow.aliases or {}),
        "generationCount": view.generation_count,
        "imageCount": view.image_count,
        "meta": dict(flow.meta or {}),
        "createdAt": iso(flow.created_at),
        "updatedAt": iso(flow.updated_at),
    }


@router.get("", responses=keyed_responses(400))
async def list_flows(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """The project's flows, most recently changed first."""
    views, total = await FlowService(runtime).page(principal.require_project(), limit, offset)
    return paginated([render_flow(v) for v in views], total, limit, offset)


@router.get("/{flow_id}", responses=keyed_responses(404))
async def get_flow(runtime: RuntimeDep, principal: PrincipalDep, flow_id: str) -> dict[str, Any]:
    """One flow with its alias map and counts."""
    return {
        "success": True,
        "data": render_flow(await FlowService(runtime).get(principal.require_project(), flow_id)),
    }


@router.get("/{flow_id}/generations", responses=keyed_responses(404))
async def flow_generations(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, flow_id: str
) -> dict[str, Any]:
    """The flow's generations, newest first."""
    project_id = principal.require_project()
    generations = await FlowService(runtime).generations(project_id, flow_id)
    service = GenerationService(runtime)
    views: list[GenerationView] = [await service.get(project_id, g.id) for g in generations]
    links = image_links(request, runtime)
    return {
        "success": True,
        "data": [render_generation(v, links).model_dump(mode="json") for v in views],
    }


@router.get("/{flow_id}/images", responses=keyed_responses(404))
async def flow_images(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, flow_id: str
) -> dict[str, Any]:
    """The flow's images (generated and uploaded), newest first."""
    images = await FlowService(runtime).images(principal.require_project(), flow_id)
    links = image_links(request, runtime)
    assert principal.organization_slug and principal.project_slug
    return {
        "success": True,
        "data": [
            render_image_record(i, links, principal.organization_slug, principal.project_slug)
            for i in images
        ],
    }


class AliasesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    aliases: dict[str, str] = Field(..., description='{"@alias": image id or alias}; merged')


@router.put("/{flow_id}/aliases", responses=keyed_responses(400, 404))
async def set_flow_aliases(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    flow_id: str,
    body: Annotated[AliasesBody, Body()],
) -> dict[str, Any]:
    """Merge flow-scoped aliases."""
    view = await FlowService(runtime).set_aliases(
        principal.require_project(), flow_id, body.aliases
    )
    return {"success": True, "data": render_flow(view)}


@router.delete("/{flow_id}/aliases/{alias}", responses=keyed_responses(404))
async def delete_flow_alias(
    runtime: RuntimeDep, principal: PrincipalDep, flow_id: str, alias: str
) -> dict[str, Any]:
    """Remove one flow-scoped alias."""
    view = await FlowService(runtime).remove_alias(principal.require_project(), flow_id, alias)
    return {"success": True, "data": render_flow(view)}


@router.post("/{flow_id}/regenerate", responses=keyed_responses(404))
async def regenerate_flow(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, flow_id: str
) -> dict[str, Any]:
    """Re-run the flow's latest generation, in place."""
    project_id = principal.require_project()
    generation_id = await FlowService(runtime).regenerate(project_id, flow_id)
    view = await GenerationService(runtime).get(project_id, generation_id)
    return {
        "success": True,
        "data": render_generation(view, image_links(request, runtime)).model_dump(mode="json"),
    }


@router.delete("/{flow_id}", responses=keyed_responses(404))
async def delete_flow(runtime: RuntimeDep, principal: PrincipalDep, flow_id: str) -> dict[str, Any]:
    """Delete the flow, its generations and its unaliased images (aliased images stay)."""
    await FlowService(runtime).delete(principal.require_project(), flow_id)
    return {"success": True, "data": {"id": flow_id}}
