"""The native (Banatie-style) dialect: `/api/...` and `/cdn/...`, `X-API-Key`, `{success, data}`."""

from __future__ import annotations

from imagesmith.api.dialect import Dialect
from imagesmith.api.native import (
    admin,
    cdn,
    flows,
    generations,
    health,
    images,
    live,
    metrics,
    playground,
    webhooks,
)
from imagesmith.api.native.errors import ERROR_TEXT, ErrorEnvelope, render_native_error

NATIVE = Dialect(
    name="native",
    routers=(
        health.router,
        admin.router,
        generations.router,
        images.router,
        flows.router,
        live.router,
        webhooks.router,
        webhooks.admin_router,
        metrics.router,
        playground.router,
        cdn.router,
    ),
    render_error=render_native_error,
    error_schema=ErrorEnvelope,
    prefixes=("/api", "/cdn", "/health", "/metrics", "/playground"),
    error_text=ERROR_TEXT,
)
