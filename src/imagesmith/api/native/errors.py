"""The native error shape: `{"success": false, "error": {"code", "message", …}}`."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imagesmith.errors import ImagesmithError


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    success: bool = False
    error: ErrorDetail


ERROR_TEXT = {
    400: "Invalid input (VALIDATION_ERROR), including malformed JSON",
    401: "Missing, invalid, expired or revoked API key (UNAUTHORIZED)",
    402: "Not enough credits (INSUFFICIENT_CREDITS)",
    403: "The key may not do this (FORBIDDEN)",
    404: "Not found in this project",
    409: "Conflict with the current state",
    413: "The upload is too large (PAYLOAD_TOO_LARGE)",
    429: "Too many requests for this key (RATE_LIMIT_EXCEEDED); see Retry-After",
    500: "The generation failed (GENERATION_FAILED) or a server bug (INTERNAL_ERROR)",
}


def native_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": {"code": code, "message": message, **extra}}
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def render_native_error(exc: ImagesmithError) -> JSONResponse:
    return native_error(exc.status_code, exc.code, exc.message, exc.headers)
