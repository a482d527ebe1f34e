"""End-user accounts (`/api/v1/auth/register|login|refresh|me`), developer keys, and the
project routes a developer needs to run an app: its API keys and its end users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imagesmith.api.deps import RuntimeDep
from imagesmith.api.devkit.auth import (
    DeveloperDep,
    EndUserDep,
    ProjectDep,
    RoleHeader,
    require_role,
)
from imagesmith.api.dialect import error_responses
from imagesmith.api.links import iso
from imagesmith.auth.end_users import EndUserService, TokenPair
from imagesmith.auth.passwords import MAX_LENGTH
from imagesmith.auth.service import KeyService, Principal
from imagesmith.errors import Forbidden, NotFound
from imagesmith.models import ApiKey, EndUser, KeyType

router = APIRouter(tags=["devkit4ai"])
KEYED = error_responses(401, 403, 422, 429)


class Register(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=MAX_LENGTH)
    full_name: str | None = Field(None, max_length=255)


class Login(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(max_length=320)
    password: str = Field(max_length=MAX_LENGTH)


class Refresh(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refresh_token: str = Field(max_length=4096)


class KeyName(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(None, max_length=255)


def render_user(user: EndUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "role": "end_user",
        "project_id": user.project_id,
        "is_active": user.is_active,
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
    }


def tokens(pair: TokenPair) -> dict[str, str]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type,
    }


def render_key(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "is_active": key.revoked_at is None,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
    if secret is not None:
        data["key"] = secret  # shown once
    return data


def project_id_of(principal: Principal) -> str:
    assert principal.project_id is not None
    return principal.project_id


@router.post("/api/v1/auth/register", status_code=201, responses=KEYED)
async def register(
    runtime: RuntimeDep,
    project: ProjectDep,
    body: Annotated[Register, Body()],
    x_user_role: RoleHeader = None,
) -> dict[str, Any]:
    """Register an end user of this project; answers the user and a token pair."""
    require_role(x_user_role, "end_user")
    user, pair = await EndUserService(runtime).register(
        project_id_of(project), body.email, body.password, body.full_name
    )
    return {**render_user(user), **tokens(pair)}


@router.post("/api/v1/auth/login", responses=KEYED)
async def login(
    runtime: RuntimeDep,
    project: ProjectDep,
    body: Annotated[Login, Body()],
    x_user_role: RoleHeader = None,
) -> dict[str, str]:
    """`{access_token, refresh_token, token_type}` for an end user's email and password."""
    require_role(x_user_role, "end_user")
    pair = await EndUserService(runtime).login(project_id_of(project), body.email, body.password)
    return tokens(pair)


@router.post("/api/v1/auth/refresh", responses=KEYED)
async def refresh(
    runtime: RuntimeDep, project: ProjectDep, body: Annotated[Refresh, Body()]
) -> dict[str, str]:
    """A new token pair; the refresh token presented is used up (a reuse signs the user out)."""
    pair = await EndUserService(runtime).refresh(project_id_of(project), body.refresh_token)
    return tokens(pair)


@router.get("/api/v1/auth/me", responses=KEYED)
async def me(runtime: RuntimeDep, user: EndUserDep) -> dict[str, Any]:
    """The end user the access token names."""
    found = await EndUserService(runtime).get(project_id_of(user), user.end_user_id or "")
    return render_user(found)


# Developer keys ---------------------------------------------------------------------------


@router.get("/api/v1/auth/developer-keys", responses=KEYED)
async def list_developer_keys(runtime: RuntimeDep, developer: DeveloperDep) -> list[dict[str, Any]]:
    """The organization's developer keys (never their secrets)."""
    async with runtime.db.transaction() as session:
        keys = await KeyService(session).keys(developer)
    return [render_key(k) for k in keys if k.key_type is KeyType.DEVELOPER]


@router.post("/api/v1/auth/developer-keys", status_code=201, responses=KEYED)
async def create_developer_key(
    runtime: RuntimeDep, developer: DeveloperDep, body: Annotated[KeyName | None, Body()] = None
) -> dict[str, Any]:
    """A new developer key for the organization (at most 10 active); the key is shown once."""
    async with runtime.db.transaction() as session:
        issued = await KeyService(session, runtime.settings.developer_keys_max).issue(
            KeyType.DEVELOPER,
            org_slug=developer.organization_slug,
            project_slug=None,
            name=body.name if body else None,
            expires_in_days=None,
        )
    return render_key(issued.key, issued.secret)


@router.delete("/api/v1/auth/developer-keys/{key_id}", status_code=204, responses=KEYED)
async def revoke_developer_key(
    runtime: RuntimeDep, developer: DeveloperDep, key_id: str
) -> Response:
    """Revoke a developer key of the organization."""
    async with runtime.db.transaction() as session:
        keys = KeyService(session)
        mine = {k.id for k in await keys.keys(developer) if k.key_type is KeyType.DEVELOPER}
        if key_id not in mine:  # only developer keys: never a master or project key here
            raise NotFound(f"Developer key '{key_id}' not found", code="KEY_NOT_FOUND")
        await keys.revoke(key_id, developer)
    return Response(status_code=204)


# A developer's projects ---------------------------------------------------------------------


async def own_project(
    runtime: RuntimeDep, developer: Principal, project_id: str
) -> tuple[str, str]:
    """(org slug, project slug) of a project in the developer's organization, else 404."""
    async with runtime.db.transaction() as session:
        found = await KeyService(session).project_by_id(project_id)
    if found is None or found[0].id != developer.organization_id:
        raise NotFound(f"No project '{project_id}' in your organization", code="PROJECT_NOT_FOUND")
    return found[0].slug, found[1].slug


@router.get("/api/v1/projects/{project_id}/api-keys", responses=KEYED)
async def list_project_keys(
    runtime: RuntimeDep, developer: DeveloperDep, project_id: str
) -> list[dict[str, Any]]:
    """The project's API keys (never their secrets)."""
    await own_project(runtime, developer, project_id)
    async with runtime.db.transaction() as session:
        keys = await KeyService(session).project_keys(project_id)
    return [render_key(k) for k in keys]


@router.post("/api/v1/projects/{project_id}/api-keys", status_code=201, responses=KEYED)
async def create_project_key(
    runtime: RuntimeDep,
    developer: DeveloperDep,
    project_id: str,
    body: Annotated[KeyName | None, Body()] = None,
) -> dict[str, Any]:
    """A new API key for the project; the key is shown once."""
    org_slug, project_slug = await own_project(runtime, developer, project_id)
    async with runtime.db.transaction() as session:
        issued = await KeyService(session).issue(
            KeyType.PROJECT,
            org_slug=org_slug,
            project_slug=project_slug,
            name=body.name if body else None,
            expires_in_days=runtime.settings.project_key_days,
        )
    return render_key(issued.key, issued.secret)


@router.delete(
    "/api/v1/projects/{project_id}/api-keys/{api_key_id}", status_code=204, responses=KEYED
)
async def revoke_project_key(
    runtime: RuntimeDep, developer: DeveloperDep, project_id: str, api_key_id: str
) -> Response:
    """Revoke one of the project's API keys."""
    await own_project(runtime, developer, project_id)
    async with runtime.db.transaction() as session:
        keys = KeyService(session)
        if api_key_id not in {k.id for k in await keys.project_keys(project_id)}:
            raise NotFound(f"API key '{api_key_id}' not found", code="KEY_NOT_FOUND")
        await keys.revoke(api_key_id)
    return Response(status_code=204)


UsersPage = Annotated[int, Query(ge=1, le=1_000_000)]
UsersPageSize = Annotated[int, Query(ge=1, le=100)]


async def users_page(
    runtime: RuntimeDep,
    project_id: str,
    page: int,
    page_size: int,
    search: str | None,
    is_active: bool | None,
) -> dict[str, Any]:
    users, total = await EndUserService(runtime).page(
        project_id, page_size, (page - 1) * page_size, search, is_active
    )
    return {
        "users": [render_user(u) for u in users],
        "total": total,
        "page": page,
        "page_size": page_size,
    }


@router.get("/api/v1/projects/{project_id}/users", responses=KEYED)
async def project_users(
    runtime: RuntimeDep,
    developer: DeveloperDep,
    project_id: str,
    page: UsersPage = 1,
    page_size: UsersPageSize = 50,
    search: Annotated[str | None, Query(max_length=320)] = None,
    is_active: bool | None = None,
) -> dict[str, Any]:
    """The project's end users, newest first."""
    await own_project(runtime, developer, project_id)
    return await users_page(runtime, project_id, page, page_size, search, is_active)


@router.get("/api/v1/projects/users", responses=KEYED)
async def users_by_query(
    runtime: RuntimeDep,
    developer: DeveloperDep,
    project_id: Annotated[str, Query(max_length=64)],
    page: UsersPage = 1,
    page_size: UsersPageSize = 50,
    search: Annotated[str | None, Query(max_length=320)] = None,
    is_active: bool | None = None,
) -> dict[str, Any]:
    """Same as /projects/{project_id}/users, with the project in the query."""
    if not project_id:
        raise Forbidden("project_id is required")
    await own_project(runtime, developer, project_id)
    return await users_page(runtime, project_id, page, page_size, search, is_active)
