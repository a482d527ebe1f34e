"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses,
so its SDK raises its own classes (BadRequestError, AuthenticationError, RateLimitError, …)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imagesmith.errors import ImagesmithError
from imagesmith.generation.parameters import ParamError


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


# Our codes → (status, type, code) as OpenAI would answer them.
CODES: dict[str, tuple[int, str, str]] = {
    "UNAUTHORIZED": (401, "invalid_request_error", "invalid_api_key"),
    "FORBIDDEN": (403, "invalid_request_error", "permission_denied"),
    "INSUFFICIENT_CREDITS": (429, "insufficient_quota", "insufficient_quota"),
    "QUOTA_EXCEEDED": (429, "insufficient_quota", "insufficient_quota"),
    "RATE_LIMIT_EXCEEDED": (429, "requests", "rate_limit_exceeded"),
    "CONCURRENCY_LIMIT_EXCEEDED": (429, "requests", "rate_limit_exceeded"),
    "PAYLOAD_TOO_LARGE": (413, "invalid_request_error", "payload_too_large"),
    "INTERNAL_ERROR": (500, "server_error", "internal_error"),
}


def render_openai_error(exc: ImagesmithError) -> JSONResponse:
    status, kind, code = exc.status_code, "invalid_request_error", exc.code.lower()
    if exc.code in CODES:
        status, kind, code = CODES[exc.code]
    elif status == 404:
        code = "not_found"
    elif status >= 500:
        kind = "server_error"
    param = exc.field if isinstance(exc, ParamError) else None
    return openai_error(status, exc.message, kind, code, param, exc.headers)


def openai_error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {"message": message, "type": kind, "param": param, "code": code}
    }
    return JSONResponse(
        body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )
