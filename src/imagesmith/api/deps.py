"""Request dependencies shared by every dialect: the process runtime and the caller's
principal, read from wherever the dialect's callers send their key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imagesmith.api.middleware import MULTIPART_MAX_BYTES, UNLIMITED_RECEIVE
from imagesmith.auth.service import KeyService, Principal
from imagesmith.errors import Unauthorized
from imagesmith.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request
    # (and, under a burst of 1000 requests, up to forty more threads in the API).
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True)
class KeyLocation:
    """Where a dialect's callers send their key: `extract` is a FastAPI dependency (usually a
    security scheme, so /docs offers it) that returns the secret or None."""

    extract: Callable[..., Any]
    header: str  # named in "missing key" messages
    missing: str | None = None  # the message when no key came; default: name the header


def principal_from(
    location: KeyLocation, *, project_only: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the key found at `location`, counts the request against
    the key's rate limit, and returns who is calling."""

    # `Depends` as a default, not in the annotation: annotations are strings here and could not
    # name `location`.
    async def principal(
        request: Request,
        runtime: RuntimeDep,
        secret: str | None = Depends(location.extract),
    ) -> Principal:
        if not secret and location.missing:
            raise Unauthorized(location.missing)
        # A read: a thousand long-polling clients must not queue for SQLite's write lock. The
        # key's last-used time is written at most once a LAST_USED_RESOLUTION, in the
        # background (auth/last_used.py).
        async with runtime.db.read() as session:
            found, stale = await KeyService(session).identify(secret, location.header)
        if stale:
            request.app.state.last_used.record(found.api_key_id)
        state = await runtime.rate_limiter.hit(found.api_key_id)
        if state is not None:
            request.state.rate_headers = state.headers()  # added to the response by middleware
        if project_only:
            found.require_project()
        return found

    return principal


BEARER = HTTPBearer(auto_error=False, description="Bearer <project key>")


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> str | None:
    return credentials.credentials.strip() if credentials else None


# Dialects whose callers send the project key as `Authorization: Bearer <key>` (Stablecog, OpenAI).
BEARER_KEY = KeyLocation(
    bearer_token, "Authorization", missing="Send your key as 'Authorization: Bearer <key>'"
)


# nginx's status for a request whose client hung up before the answer: what /metrics counts for
# a synchronous wait that ended so. The answer goes to nobody (uvicorn drops it, and does not
# log it either).
CLIENT_CLOSED_REQUEST = 499
LEFT = "The client closed the request before its wait ended"


async def hung_up(request: Request) -> None:
    """Return when the client hangs up. After the request's body (an empty one for a GET) the
    next message is the disconnect: awaited, not asked for every second (Starlette's
    `is_disconnected`), the same wait Starlette's streaming responses use. A body the route did
    not read is read past, over BodyLimit's cap too (nothing read here is kept), up to
    MULTIPART_MAX_BYTES: past that, the rest is left unread (the upload stalls) and the leaving
    goes unseen; the wait ends with its job or its time."""
    receive = request.scope.get(UNLIMITED_RECEIVE, request.receive)
    discarded = 0
    while discarded <= MULTIPART_MAX_BYTES:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        discarded += len(message.get("body", b""))
    await asyncio.Event().wait()
