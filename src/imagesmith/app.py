"""The FastAPI application. Importing this module never imports torch (a test checks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from imagesmith import __version__
from imagesmith.api import admin, cdn, health
from imagesmith.api.errors import install_error_handlers
from imagesmith.api.native import flows, generations, images, live
from imagesmith.api.stablecog import routes as stablecog_routes
from imagesmith.config import Settings
from imagesmith.db import migrate
from imagesmith.runtime import Runtime

log = logging.getLogger(__name__)

DESCRIPTION = """Self-hosted, multi-tenant image generation.

Native API: send your project key in `X-API-Key`. Create a generation with
`POST /api/v1/generations`; it answers `201` at once with status `pending`. Poll
`GET /api/v1/generations/{id}`, or send `Prefer: wait=30` to get the finished record in one call.
Images are served at `/cdn/{org}/{project}/img/{imageId}`.
"""


def create_app(settings: Settings | None = None, *, embedded_worker: bool = True) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, settings)
        runtime = Runtime.open(settings)
        app.state.runtime = runtime
        stop = asyncio.Event()
        worker_task: asyncio.Task[None] | None = None
        if embedded_worker:
            from imagesmith.worker.supervisor import Worker

            worker_task = asyncio.create_task(Worker(runtime).run(stop))
        try:
            async with runtime.listening():
                yield
        finally:
            stop.set()
            if worker_task is not None:
                try:
                    await asyncio.wait_for(worker_task, settings.shutdown_grace_seconds + 15)
                except (TimeoutError, Exception):
                    log.exception("worker.stop_failed")
            await runtime.close()

    app = FastAPI(
        title="imagesmith",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def rate_limit_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(getattr(request.state, "rate_headers", {}))
        return response

    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(generations.router)
    app.include_router(images.router)
    app.include_router(flows.router)
    app.include_router(live.router)
    app.include_router(cdn.router)
    app.include_router(stablecog_routes.router)

    def openapi() -> dict[str, Any]:
        # Our validation errors answer 400 in the dialect's envelope, never FastAPI's 422.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": "Invalid input (VALIDATION_ERROR)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}
                                }
                            },
                        }
            schemas = schema.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
