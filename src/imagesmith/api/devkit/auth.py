"""How devkit4ai callers authenticate. Every project-scoped request names its project three
ways — `X-API-Key` (the project's key), `X-Project-ID` and `X-Developer-Key` (a developer key
of the project's organization) — and they must agree; an end user adds `Authorization: Bearer
<access token>` and `X-User-Role: end_user`; developers send `X-User-Role: developer` and their
`X-Developer-Key`."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from imagesmith.api.deps import KeyLocation, RuntimeDep, principal_from
from imagesmith.auth.end_users import EndUserService
from imagesmith.auth.service import KeyService, Principal, developer_of
from imagesmith.errors import Forbidden
from imagesmith.models import KeyType

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The project's API key")
BEARER = HTTPBearer(auto_error=False, description="An end user's access token (from login)")
project_key = principal_from(KeyLocation(API_KEY, "X-API-Key"), project_only=True)

ProjectIdHeader = Annotated[
    str | None, Header(alias="X-Project-ID", description="The project's id (UUID)")
]
DeveloperKeyHeader = Annotated[
    str | None,
    Header(alias="X-Developer-Key", description="A developer key of the project's organization"),
]
RoleHeader = Annotated[str | None, Header(alias="X-User-Role", description="end_user or developer")]


async def project_principal(
    request: Request,
    runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(project_key)],
    x_project_id: ProjectIdHeader = None,
    x_developer_key: DeveloperKeyHeader = None,
) -> Principal:
    if not x_project_id:
        raise Forbidden("Missing X-Project-ID: send the project's id (GET /api/info shows it)")
    if x_project_id.strip().lower() != principal.project_id:
        raise Forbidden("X-Project-ID does not match the project of X-API-Key")
    # A read, as for every key (api/deps.py): each status poll took SQLite's write lock here.
    async with runtime.db.read() as session:
        developer, stale = await developer_of(
            KeyService(session), x_developer_key, principal.organization_id
        )
    if stale:
        request.app.state.last_used.record(developer.api_key_id)
    return principal


ProjectDep = Annotated[Principal, Depends(project_principal)]


def require_role(role: str | None, wanted: str) -> None:
    if (role or "").strip() != wanted:
        raise Forbidden(f"X-User-Role must be '{wanted}' for this route")


async def end_user_principal(
    runtime: RuntimeDep,
    project: ProjectDep,
    x_user_role: RoleHeader = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
) -> Principal:
    require_role(x_user_role, "end_user")
    token = credentials.credentials if credentials else None
    assert project.project_id is not None
    user = await EndUserService(runtime).authenticate(project.project_id, token)
    return dataclasses.replace(project, end_user_id=user.id, key_holder=False)


EndUserDep = Annotated[Principal, Depends(end_user_principal)]


async def developer_principal(
    request: Request,
    runtime: RuntimeDep,
    x_user_role: RoleHeader = None,
    x_developer_key: DeveloperKeyHeader = None,
) -> Principal:
    require_role(x_user_role, "developer")
    async with runtime.db.read() as session:
        developer, stale = await KeyService(session).identify(x_developer_key, "X-Developer-Key")
    if stale:
        request.app.state.last_used.record(developer.api_key_id)
    if developer.key_type is not KeyType.DEVELOPER:
        raise Forbidden("X-Developer-Key is not a developer key")
    return developer


DeveloperDep = Annotated[Principal, Depends(developer_principal)]
