"""Public health and info routes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from imagesmith import __version__, serving
from imagesmith.api.deps import RuntimeDep
from imagesmith.auth.service import KeyService
from imagesmith.errors import Unauthorized
from imagesmith.generation.aspect import ASPECT_RATIOS
from imagesmith.generation.enhance import TEMPLATES
from imagesmith.generation.service import GenerationService

router = APIRouter(tags=["health"])
STARTED = time.monotonic()


@router.get("/health")
async def health() -> dict[str, Any]:
    """Liveness: cheap, touches nothing."""
    return {
        "status": "healthy",
        "timestamp": datetime.now(UTC).isoformat(),
        "uptime": round(time.monotonic() - STARTED, 3),
        "version": __version__,
    }


WORKER_FRESH = timedelta(seconds=30)


@router.get("/health/ready", responses={503: {"description": "database or storage unusable"}})
async def ready(
    runtime: RuntimeDep,
    x_api_key: Annotated[
        str | None, Header(description="A master key adds details: hosts, store, errors")
    ] = None,
) -> JSONResponse:
    """Readiness: database, storage, live workers and queue depth (details for master keys)."""
    detailed = await is_operator(runtime, x_api_key)
    checks: dict[str, Any] = {}
    ok = True
    workers: list[dict[str, Any]] = []
    queue: dict[str, int] = {}
    try:
        queue, live = await GenerationService(runtime).fleet(WORKER_FRESH)
        for worker in live:
            entry: dict[str, Any] = {
                "device": worker.device,
                "heartbeatAt": worker.heartbeat_at.isoformat(),
                "batchesRun": worker.batches_run,
            }
            if detailed:
                entry.update(id=worker.id, hostname=worker.hostname)
            workers.append(entry)
        checks["database"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["database"] = {"ok": False}
        if detailed:
            checks["database"]["error"] = str(exc)[:300]
    try:
        await runtime.store.check()
        checks["storage"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["storage"] = {"ok": False}
        if detailed:
            checks["storage"]["error"] = str(exc)[:300]
    if detailed:
        checks["storage"]["store"] = runtime.store.describe()
    body: dict[str, Any] = {
        "status": "ready" if ok else "unavailable",
        "checks": checks,
        "workers": workers,
        "queue": {"pending": queue.get("pending", 0), "processing": queue.get("processing", 0)},
    }
    if detailed:
        body["runtime"] = {"eventLoop": serving.loop_name()}
    if ok and not workers:
        body["warnings"] = [
            "No worker has sent a heartbeat in the last 30 s: new jobs will wait in the queue."
        ]
    return JSONResponse(body, status_code=200 if ok else 503)


async def is_operator(runtime: RuntimeDep, secret: str | None) -> bool:
    """Whether `secret` is a global (unscoped) master key: anonymous callers learn nothing about
    hosts, buckets or paths."""
    if not secret:
        return False
    try:  # a read: anyone may send a key here, and must not queue for SQLite's write lock
        async with runtime.db.read() as session:
            principal, _stale = await KeyService(session).identify(secret)
    except Exception:  # a bad key or a database that is down: no details
        return False
    return principal.is_global_admin


@router.get("/api/info")
async def info(
    runtime: RuntimeDep,
    x_api_key: Annotated[str | None, Header(description="Optional: show this key's scope")] = None,
) -> dict[str, Any]:
    """What this server is, its limits, and (with a key) who you are."""
    data: dict[str, Any] = {
        "name": "imagesmith",
        "version": __version__,
        "endpoints": {
            "generations": "/api/v1/generations",
            "cdn": "/cdn/{org}/{project}/img/{imageId}",
            "docs": "/docs",
            "openapi": "/openapi.json",
        },
        "limits": {
            "aspectRatios": list(ASPECT_RATIOS),
            "templates": list(TEMPLATES),
            "maxReferenceImages": 3,
            "listLimitMax": 100,
            "maxWaitSeconds": runtime.settings.max_wait_seconds,
        },
        "defaultModel": runtime.settings.default_model,
        "models": [spec.id for spec in runtime.registry.all()],
    }
    if x_api_key:
        try:
            async with runtime.db.read() as session:  # anyone may send a key: no write lock
                principal, _stale = await KeyService(session).identify(x_api_key)
            data["auth"] = {
                "keyType": principal.key_type.value,
                "organizationSlug": principal.organization_slug,
                "projectSlug": principal.project_slug,
                "projectId": principal.project_id,
            }
            if principal.project_id is not None:
                data["project"] = {
                    "id": principal.project_id,
                    "slug": principal.project_slug,
                    "organizationSlug": principal.organization_slug,
                }
        except Unauthorized as exc:
            data["auth"] = {"error": exc.message}
    return data
