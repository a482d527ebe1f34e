"""Webhook endpoints, delivery logs and the signing secret: `/api/v1/webhooks` with a project
key, and the same routes under `/api/admin/projects/{org}/{project}/webhooks` with a master
key (one set of handlers, two ways to name the project)."""

# No `from __future__ import annotations`: the handlers' annotations name a dependency made
# per router (ProjectId), which FastAPI can only see if they are evaluated where they stand.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.dialect import keyed_responses
from imagesmith.api.links import iso
from imagesmith.api.native.auth import MasterDep, PrincipalDep
from imagesmith.api.native.render import MAX_OFFSET, paginated
from imagesmith.auth.service import KeyService
from imagesmith.models import WebhookDelivery, WebhookEndpoint
from imagesmith.webhooks.events import ALL_EVENTS, DEFAULT_EVENTS
from imagesmith.webhooks.service import EndpointChange, WebhookService

EVENTS_HELP = (
    f"Any of {', '.join(ALL_EVENTS)} (or just started, completed, …). Default: "
    f"{', '.join(DEFAULT_EVENTS)}; progress only when asked for"
)


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EndpointCreate(_Body):
    url: str = Field(max_length=2048, description="Where deliveries are POSTed (http or https)")
    events: list[str] | None = Field(None, max_length=10, description=EVENTS_HELP)
    description: str | None = Field(None, max_length=255)
    enabled: StrictBool = True


class EndpointUpdate(_Body):
    url: str | None = Field(None, max_length=2048)
    events: list[str] | None = Field(None, max_length=10, description=EVENTS_HELP)
    description: str | None = Field(None, max_length=255)
    enabled: StrictBool | None = Field(None, description="false stops deliveries; true resumes")


def render_endpoint(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events or []),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabledReason": endpoint.disabled_reason,
        "createdAt": iso(endpoint.created_at),
        "updatedAt": iso(endpoint.updated_at),
    }


def render_delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhookId": delivery.message_id,
        "eventType": delivery.event_type,
        "generationId": delivery.generation_id,
        "endpointId": delivery.endpoint_id,
        "url": delivery.url,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "maxAttempts": delivery.max_attempts,
        "nextAttemptAt": iso(delivery.next_attempt_at),
        "lastAttemptAt": iso(delivery.last_attempt_at),
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "deliveredAt": iso(delivery.delivered_at),
        "createdAt": iso(delivery.created_at),
        "attemptLog": list(delivery.attempt_log or []),
    }


async def key_project(principal: PrincipalDep) -> str:
    return principal.require_project()


async def admin_project(runtime: RuntimeDep, admin: MasterDep, org: str, project: str) -> str:
    async with runtime.db.read() as session:
        found = await KeyService(session).administered_project(admin, org, project)
    return found.id


def webhook_routes(prefix: str, project: Callable[..., Awaitable[str]], tag: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=[tag])
    ProjectId = Annotated[str, Depends(project)]
    Limit = Annotated[int, Query(ge=1, le=100)]
    Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]

    @router.post("", status_code=201, responses=keyed_responses(400, 404))
    async def create_endpoint(
        runtime: RuntimeDep, project_id: ProjectId, body: Annotated[EndpointCreate, Body()]
    ) -> dict[str, Any]:
        """Add an endpoint: the project's generation events are POSTed to it, signed."""
        endpoint = await WebhookService(runtime).create(
            project_id, body.url, body.events, body.description, body.enabled
        )
        return {"success": True, "data": render_endpoint(endpoint)}

    @router.get("", responses=keyed_responses(404))
    async def list_endpoints(runtime: RuntimeDep, project_id: ProjectId) -> dict[str, Any]:
        """The project's endpoints, oldest first."""
        endpoints = await WebhookService(runtime).endpoints(project_id)
        return {"success": True, "data": [render_endpoint(e) for e in endpoints]}

    # Before /{endpoint_id}: these are fixed names, not ids.
    @router.get("/secret", responses=keyed_responses(404))
    async def get_secret(runtime: RuntimeDep, project_id: ProjectId) -> dict[str, Any]:
        """The secret deliveries are signed with (made on first use). Keep it server-side."""
        secret, signing = await WebhookService(runtime).secret(project_id)
        return {"success": True, "data": {"secret": secret, "signingSecrets": len(signing)}}

    @router.post("/secret/rotate", responses=keyed_responses(404))
    async def rotate_secret(runtime: RuntimeDep, project_id: ProjectId) -> dict[str, Any]:
        """A new secret; the previous one keeps signing too for the overlap (24 h by default),
        so receivers can switch without losing a delivery."""
        secret, signing = await WebhookService(runtime).secret(project_id, rotate=True)
        return {"success": True, "data": {"secret": secret, "signingSecrets": len(signing)}}

    @router.post("/deliveries/{delivery_id}/retry", responses=keyed_responses(404))
    async def retry_delivery(
        runtime: RuntimeDep, project_id: ProjectId, delivery_id: str
    ) -> dict[str, Any]:
        """Send a delivery again now (same webhook-id and body)."""
        delivery = await WebhookService(runtime).redeliver(project_id, delivery_id)
        return {"success": True, "data": render_delivery(delivery)}

    @router.get("/{endpoint_id}", responses=keyed_responses(404))
    async def get_endpoint(
        runtime: RuntimeDep, project_id: ProjectId, endpoint_id: str
    ) -> dict[str, Any]:
        endpoint = await WebhookService(runtime).get(project_id, endpoint_id)
        return {"success": True, "data": render_endpoint(endpoint)}

    async def update_endpoint(
        runtime: RuntimeDep,
        project_id: ProjectId,
        endpoint_id: str,
        body: Annotated[EndpointUpdate, Body()],
    ) -> dict[str, Any]:
        """Change the fields given; the others stay. Enabling clears disabledReason."""
        change = EndpointChange(body.url, body.events, body.description, body.enabled)
        endpoint = await WebhookService(runtime).update(project_id, endpoint_id, change)
        return {"success": True, "data": render_endpoint(endpoint)}

    for method in ("PATCH", "PUT"):
        router.add_api_route(
            "/{endpoint_id}",
            update_endpoint,
            methods=[method],
            responses=keyed_responses(400, 404),
            name=f"update_endpoint_{method.lower()}",
        )

    @router.delete("/{endpoint_id}", responses=keyed_responses(404))
    async def delete_endpoint(
        runtime: RuntimeDep, project_id: ProjectId, endpoint_id: str
    ) -> dict[str, Any]:
        """Delete the endpoint; its pending deliveries are marked failed."""
        await WebhookService(runtime).delete(project_id, endpoint_id)
        return {"success": True, "message": "Webhook endpoint deleted", "data": {"id": endpoint_id}}

    @router.get("/{endpoint_id}/deliveries", responses=keyed_responses(400, 404))
    async def endpoint_deliveries(
        runtime: RuntimeDep,
        project_id: ProjectId,
        endpoint_id: str,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """The endpoint's delivery log, newest first."""
        rows, total = await WebhookService(runtime).endpoint_deliveries(
            project_id, endpoint_id, limit, offset
        )
        return paginated([render_delivery(d) for d in rows], total, limit, offset)

    return router


router = webhook_routes("/api/v1/webhooks", key_project, "webhooks")
admin_router = webhook_routes(
    "/api/admin/projects/{org}/{project}/webhooks", admin_project, "admin"
)
