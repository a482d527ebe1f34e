"""The FastAPI application. Importing this module never imports torch (a test checks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imagesmith import __version__, serving
from imagesmith.api.dialect import Dialect, Dialects
from imagesmith.api.dialects import DIALECTS
from imagesmith.api.middleware import BodyLimit, HttpMetrics, RateHeaders
from imagesmith.auth.last_used import LastUsed
from imagesmith.config import Settings
from imagesmith.db import migrate
from imagesmith.generation.watch import ChangeSweep
from imagesmith.runtime import Runtime
from imagesmith.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

DESCRIPTION = """Self-hosted, multi-tenant image generation.

Native API: send your project key in `X-API-Key`. Create a generation with
`POST /api/v1/generations`; it answers `201` at once with status `pending`. Poll
`GET /api/v1/generations/{id}`, or send `Prefer: wait=30` to get the finished record in one call.
Images are served at `/cdn/{org}/{project}/img/{imageId}`.
"""


class EmbeddedWorker:
    """`imagesmith serve`'s worker, on a thread with an event loop of its own: a thousand
    requests queued on the API's loop never delay the worker's claims, leases and results, and a
    slow batch bookkeeping step never delays a request. Wake-ups cross between the loops
    (the notifiers share their waiters); each loop has its own database pool."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.thread = threading.Thread(target=self._main, name="imagesmith-worker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        self.thread.start()
        await asyncio.to_thread(self._started.wait)

    def _main(self) -> None:
        serving.run(self._run, self.runtime.settings)  # the API's kind of loop

    async def _run(self) -> None:
        from imagesmith.worker.run import run_workers

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runtime = self.runtime.for_another_loop()
        self._started.set()
        try:
            await run_workers(runtime, self._stop)
        except Exception:
            log.exception("worker.crashed")
        finally:
            await runtime.notifier.drain()
            await runtime.db.dispose()

    async def stop(self, timeout: float) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self.thread.join, timeout)
        if self.thread.is_alive():
            log.error("worker.stop_failed: still running after %.0f s", timeout)


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
            runtime.hear_only_this_process(False)  # its workers are other processes
        app.state.runtime = runtime
        app.state.last_used = LastUsed(runtime.db)  # API keys' last use, off the request path
        stop = asyncio.Event()
        # An API with its embedded worker on SQLite hears every change until a separate worker
        # shows up in the workers table (the sweep looks).
        sweeping = asyncio.create_task(
            ChangeSweep(runtime, count_workers=settings.is_sqlite and embedded_worker).run(stop)
        )
        # Every API process sends webhooks (its own cancels, its embedded worker's events, and
        # what a dead process left); a separate `imagesmith worker` sends its own too.
        sending = asyncio.create_task(WebhookSender(runtime).run(stop))
        worker: EmbeddedWorker | None = None
        try:
            async with runtime.listening():
                # Inside: on PostgreSQL the worker's first claims count on hearing only once the
                # LISTEN connection is up.
                if embedded_worker:
                    worker = EmbeddedWorker(runtime)
                    await worker.start()
                serving.settle_heap()
                yield
        finally:
            serving.unsettle_heap()
            stop.set()
            if worker is not None:
                await worker.stop(settings.shutdown_grace_seconds + 15)
            await sweeping
            await sending
            await app.state.last_used.drain()
            await runtime.close()

    app = FastAPI(
        title="imagesmith",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )

    app.add_middleware(RateHeaders)
    app.add_middleware(BodyLimit)
    app.add_middleware(HttpMetrics)  # outermost: it sees every answer, 413s included
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
