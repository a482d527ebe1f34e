"""The FastAPI application. Importing this module never imports torch (a test checks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imagesmith import __version__
from imagesmith.api.dialect import Dialect, Dialects
from imagesmith.api.dialects import DIALECTS
from imagesmith.api.middleware import BodyLimit, RateHeaders
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


def create_app(
    settings: Settings | None = None,
    *,
    embedded_worker: bool = True,
    dialects: Sequence[Dialect] = DIALECTS,
) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, settings)
        runtime = Runtime.open(settings)
        if settings.is_sqlite and not embedded_worker:
            # Workers are other processes, and SQLite carries no wake-ups between processes.
            runtime.notifier.recheck_seconds = min(
                settings.poll_seconds, settings.wait_recheck_seconds
            )
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

    app.add_middleware(RateHeaders)
    app.add_middleware(BodyLimit)
    mounted = Dialects(dialects)
    mounted.mount(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            mounted.document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
