"""How native callers authenticate: `X-API-Key: <project or master key>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader

from imagesmith.api.deps import KeyLocation, principal_from
from imagesmith.auth.service import Principal
from imagesmith.errors import Forbidden

API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Project key (or a master key for admin routes)"
)
NATIVE_KEY = KeyLocation(API_KEY, "X-API-Key")

PrincipalDep = Annotated[Principal, Depends(principal_from(NATIVE_KEY))]


async def master_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_master:
        raise Forbidden("This route needs a master key")
    return principal


MasterDep = Annotated[Principal, Depends(master_principal)]
