"""The devkit4ai dialect: end users with JWTs and project headers, Generation V2, `{detail}`."""

from __future__ import annotations

from imagesmith.api.devkit import accounts, generation
from imagesmith.api.devkit.errors import ERROR_TEXT, DevkitError, render_devkit_error
from imagesmith.api.dialect import Dialect

DEVKIT = Dialect(
    name="devkit4ai",
    routers=(accounts.router, generation.router),
    render_error=render_devkit_error,
    error_schema=DevkitError,
    prefixes=("/api/v1/generation", "/api/v1/auth", "/api/v1/projects"),
    error_text=ERROR_TEXT,
    validation_status=422,
)
