"""Key administration for master keys, and the one-time bootstrap of the first master key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.dialect import error_responses
from imagesmith.api.native.auth import MasterDep
from imagesmith.auth.service import IssuedKey, KeyService, key_summary
from imagesmith.limits.credits import Credits
from imagesmith.limits.quotas import Quotas, Usage
from imagesmith.live.service import set_project_live
from imagesmith.models import KeyType

router = APIRouter(tags=["admin"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: Literal["master", "project"] = "project"
    organization_slug: str | None = Field(None, max_length=64)
    project_slug: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=255)
    expires_in_days: int | None = Field(
        None, ge=1, le=3650, description="Default 90 for project keys; master keys never expire"
    )


class KeyEnvelope(BaseModel):
    success: bool = True
    data: dict[str, Any]


class KeyListEnvelope(BaseModel):
    success: bool = True
    data: list[dict[str, Any]]


def issued(result: IssuedKey) -> dict[str, Any]:
    data = key_summary(result.key)
    data["key"] = result.secret
    data["organizationSlug"] = result.organization.slug if result.organization else None
    data["projectSlug"] = result.project.slug if result.project else None
    data["warning"] = "Store this key now: it is shown only once"
    return data


@router.post(
    "/api/bootstrap/initial-key",
    status_code=201,
    response_model=KeyEnvelope,
    responses=error_responses(403),
)
async def bootstrap_initial_key(runtime: RuntimeDep) -> dict[str, Any]:
    """Create the first master key; works only while no key exists."""
    async with runtime.db.transaction() as session:
        result = await KeyService(session).bootstrap()
    return {"success": True, "data": issued(result)}


@router.post(
    "/api/admin/keys",
    status_code=201,
    response_model=KeyEnvelope,
    responses=error_responses(400, 401, 403),
)
async def create_key(
    runtime: RuntimeDep, admin: MasterDep, body: Annotated[KeyCreate, Body()]
) -> dict[str, Any]:
    """Create a master or project key; the organization and project are created if needed."""
    key_type = KeyType(body.type)
    days = body.expires_in_days
    if days is None and key_type is KeyType.PROJECT:
        days = runtime.settings.project_key_days
    async with runtime.db.transaction() as session:
        result = await KeyService(session).issue(
            key_type,
            org_slug=body.organization_slug,
            project_slug=body.project_slug,
            name=body.name,
            expires_in_days=days,
            admin=admin,
        )
    return {"success": True, "data": issued(result)}


@router.get("/api/admin/keys", response_model=KeyListEnvelope, responses=error_responses(401, 403))
async def list_keys(runtime: RuntimeDep, admin: MasterDep) -> dict[str, Any]:
    """List the keys this master key administers (never their secrets)."""
    async with runtime.db.transaction() as session:
        keys = await KeyService(session).keys(admin)
    return {"success": True, "data": [key_summary(key) for key in keys]}


@router.delete(
    "/api/admin/keys/{key_id}", response_model=KeyEnvelope, responses=error_responses(401, 403, 404)
)
async def revoke_key(runtime: RuntimeDep, admin: MasterDep, key_id: str) -> dict[str, Any]:
    """Revoke a key; it stops working at once."""
    async with runtime.db.transaction() as session:
        key = await KeyService(session).revoke(key_id, admin)
        return {"success": True, "data": key_summary(key)}


class CreditsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    balance: int | None = Field(..., ge=0, le=2**53, description="Credits left; null = unlimited")


@router.put(
    "/api/admin/projects/{org}/{project}/credits",
    response_model=KeyEnvelope,
    responses=error_responses(400, 401, 403, 404),
)
async def set_credits(
    runtime: RuntimeDep,
    admin: MasterDep,
    org: str,
    project: str,
    body: Annotated[CreditsBody, Body()],
) -> dict[str, Any]:
    """Set a project's credit balance (one credit per output image; null = unlimited)."""
    async with runtime.db.transaction() as session:
        found = await KeyService(session).administered_project(admin, org, project)
        await Credits(session).set_balance(found.id, body.balance)
    return {
        "success": True,
        "data": {"organizationSlug": org, "projectSlug": project, "balance": body.balance},
    }


class LiveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: StrictBool = Field(description="Whether the project's live URLs may generate at all")
    open_scopes: list[str] | None = Field(
        None,
        alias="openScopes",
        max_length=100,
        description="Scopes strangers may start by first use; omitted: unchanged",
    )


@router.put(
    "/api/admin/projects/{org}/{project}/live",
    response_model=KeyEnvelope,
    responses=error_responses(400, 401, 403, 404),
)
async def set_live(
    runtime: RuntimeDep,
    admin: MasterDep,
    org: str,
    project: str,
    body: Annotated[LiveBody, Body()],
) -> dict[str, Any]:
    """Turn a project's live URLs on or off (off by default) and set its open scopes."""
    async with runtime.db.transaction() as session:
        found = await KeyService(session).administered_project(admin, org, project)
        set_project_live(found, body.enabled, body.open_scopes)
        enabled, open_scopes = found.live_enabled, list(found.live_open_scopes or [])
    return {
        "success": True,
        "data": {
            "organizationSlug": org,
            "projectSlug": project,
            "enabled": enabled,
            "openScopes": open_scopes,
        },
    }


class PlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    plan: str = Field(description="free, starter, premium or unlimited")
    monthly_quota: int | None = Field(None, alias="monthlyQuota", ge=0, le=2**31 - 1)
    concurrent_limit: int | None = Field(None, alias="concurrentLimit", ge=0, le=100_000)
    end_user_monthly_quota: int | None = Field(
        None, alias="endUserMonthlyQuota", ge=0, le=2**31 - 1
    )


def render_usage(org: str, project: str, usage: Usage) -> dict[str, Any]:
    limits = usage.limits
    return {
        "organizationSlug": org,
        "projectSlug": project,
        "plan": limits.plan,
        "monthlyQuota": limits.monthly,
        "concurrentLimit": limits.concurrent,
        "endUserMonthlyQuota": limits.end_user_monthly,
        "month": usage.month,
        "used": usage.used,
        "inFlight": usage.in_flight,
    }


@router.put(
    "/api/admin/projects/{org}/{project}/plan",
    response_model=KeyEnvelope,
    responses=error_responses(400, 401, 403, 404),
)
async def set_plan(
    runtime: RuntimeDep,
    admin: MasterDep,
    org: str,
    project: str,
    body: Annotated[PlanBody, Body()],
) -> dict[str, Any]:
    """Put a project on a plan; the numbers given override the plan's (null: the plan's)."""
    async with runtime.db.transaction() as session:
        found = await KeyService(session).administered_project(admin, org, project)
        quotas = Quotas(session)
        quotas.set_plan(
            found,
            body.plan,
            body.monthly_quota,
            body.concurrent_limit,
            body.end_user_monthly_quota,
        )
        usage = await quotas.usage(found)
    return {"success": True, "data": render_usage(org, project, usage)}


@router.get(
    "/api/admin/projects/{org}/{project}/plan",
    response_model=KeyEnvelope,
    responses=error_responses(401, 403, 404),
)
async def get_plan(runtime: RuntimeDep, admin: MasterDep, org: str, project: str) -> dict[str, Any]:
    """A project's plan, its limits and its usage this month."""
    async with runtime.db.transaction() as session:
        found = await KeyService(session).administered_project(admin, org, project)
        usage = await Quotas(session).usage(found)
    return {"success": True, "data": render_usage(org, project, usage)}
