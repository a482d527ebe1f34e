"""Public health and info routes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header

from imagesmith import __version__
from imagesmith.api.deps import RuntimeDep
from imagesmith.auth.service import KeyService
from imagesmith.db.base import utcnow
from imagesmith.errors import Unauthorized
from imagesmith.generation.aspect import ASPECT_RATIOS
from imagesmith.generation.enhance import TEMPLATES

router = APIRouter(tags=["health"])
STARTED = time.monotonic()


@router.get("/health")
async def health() -> dict[str, Any]:
    """Liveness: cheap, touches nothing."""
    return {
        "status": "healthy",
        "timestamp": utcnow().isoformat(),
        "uptime": round(time.monotonic() - STARTED, 3),
        "version": __version__,
    }


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
