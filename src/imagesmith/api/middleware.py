"""Pure ASGI middleware (no BaseHTTPMiddleware: it wraps a body read's errors in an exception
group, which would turn a 413 into FastAPI's "error parsing the body").

* BodyLimit caps request bodies while they stream in, before any parsing: JSON (and any other
  non-multipart body) at JSON_MAX_BYTES, multipart at MULTIPART_MAX_BYTES (each upload route
  keeps its own tighter file limit). The refusal is raised inside the route's body read, so it
  is rendered in the route's dialect like every other error. What only listens for the client
  leaving (`deps.hung_up`) reads past it (`UNLIMITED_RECEIVE`): it keeps nothing it reads, and a
  route that never reads its body (a regenerate) never refused it.
* RateHeaders adds the `X-RateLimit-*` headers the key's limiter left in the request state.
* HttpMetrics counts every response by route template (never the raw path: ids would make a
  label per request) and status, and times it to its last byte."""

from __future__ import annotations

import time

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagesmith import metrics

JSON_MAX_BYTES = 256 * 1024
# The scope key of the request's receive without the cap, for `deps.hung_up`.
UNLIMITED_RECEIVE = "imagesmith.unlimited_receive"
MULTIPART_MAX_BYTES = 51 * 1024 * 1024  # devkit4ai: 5 example images of 10 MB


def too_large(limit: int) -> HTTPException:
    # Starlette's HTTPException: FastAPI re-raises it from the body read instead of turning it
    # into "There was an error parsing the body".
    return HTTPException(413, f"Request body is over the {limit}-byte limit for this route")


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        json_max: int = JSON_MAX_BYTES,
        multipart_max: int = MULTIPART_MAX_BYTES,
    ):
        self.app = app
        self.json_max = json_max
        self.multipart_max = multipart_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").startswith("multipart/")
        limit = self.multipart_max if multipart else self.json_max
        declared = headers.get("content-length", "")
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if (
                declared.isascii()
                and declared.isdigit()
                and len(declared) < 19
                and int(declared) > limit
            ):
                raise too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        scope[UNLIMITED_RECEIVE] = receive
        await self.app(scope, limited, send)


class RateHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get("rate_headers") or {}
                if extra:
                    headers = MutableHeaders(scope=message)
                    for name, value in extra.items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class HttpMetrics:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts a response

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = str(scope.get("method", ""))
            method = method if method in METHODS else "OTHER"
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            elapsed = time.perf_counter() - started
            metrics.HTTP_LATENCY.labels(method, route, str(status)).observe(elapsed)
