"""Request dependencies: the process runtime and the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from imagesmith.api.native.render import ImageLinks
from imagesmith.auth.service import KeyService, Principal
from imagesmith.errors import Forbidden
from imagesmith.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def native_principal(
    request: Request,
    runtime: RuntimeDep,
    x_api_key: Annotated[str | None, Header(description="Project or master API key")] = None,
) -> Principal:
    async with runtime.db.transaction() as session:
        principal = await KeyService(session).authenticate(x_api_key)
    state = await runtime.rate_limiter.hit(principal.api_key_id)
    if state is not None:
        request.state.rate_headers = state.headers()  # added to the response by middleware
    return principal


PrincipalDep = Annotated[Principal, Depends(native_principal)]


async def master_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_master:
        raise Forbidden("This route needs a master key")
    return principal


MasterDep = Annotated[Principal, Depends(master_principal)]


def image_links(request: Request, runtime: Runtime) -> ImageLinks:
    base = (runtime.settings.public_url or str(request.base_url)).rstrip("/")
    return ImageLinks(base, runtime.store)
