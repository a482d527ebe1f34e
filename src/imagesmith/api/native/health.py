"""Public health and info routes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from imagesmith import __version__
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
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: database, storage, live workers and queue depth."""
    checks: dict[str, Any] = {}
    ok = True
    workers: list[dict[str, Any]] = []
    queue: dict[str, int] = {}
    try:
        queue, live = await GenerationService(runtime).fleet(WORKER_FRESH)
        for worker in live:
            workers.append(
                {
                    "id": worker.id,
                    "hostname": worker.hostname,
                    "device": worker.device,
                    "heartbeatAt": worker.heartbeat_at.isoformat(),
                    "batchesRun": worker.batches_run,
                }
            )
        checks["database"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["database"] = {"ok": False, "error": str(exc)[:300]}
    try:
        await runtime.store.check()
        checks["storage"] = {"ok": True, "store": runtime.store.describe()}
    except Exception as exc:
        ok = False
        checks["storage"] = {
            "ok": False,
            "store": runtime.store.describe(),
            "error": str(exc)[:300],
        }
    body: dict[str, Any] = {
        "status": "ready" if ok else "unavailable",
        "checks": checks,
        "workers": workers,
        "queue": {"pending": queue.get("pending", 0), "processing": queue.get("processing", 0)},
    }
    if ok and not workers:
        body["warnings"] = [
            "No worker has sent a heartbeat in the last 30 s: new jobs will wait in the queue."
        ]
    return JSONResponse(body, status_code=200 if ok else 503)


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
            async with runtime.db.transaction() as session:
                principal = await KeyService(session).authenticate(x_api_key)
            data["auth"] = {
                "keyType": principal.key_type.value,
                "organizationSlug": principal.organization_slug,
                "projectSlug": principal.project_slug,
                "projectId": principal.project_id,
            }
        except Unauthorized as exc:
            data["auth"] = {"error": exc.message}
    return data
