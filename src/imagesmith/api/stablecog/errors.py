"""Stablecog's error shape: `{"error": "<code or free text>", "description": "…"}`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imagesmith.api.dialect import MalformedJson
from imagesmith.errors import ImagesmithError
from imagesmith.generation.parameters import ParamError


class StablecogError(BaseModel):
    error: str
    description: str | None = None


# Our codes → Stablecog's (status, error); anything else keeps its status and lower-cased code.
CODES: dict[str, tuple[int, str]] = {
    "UNAUTHORIZED": (401, "Unauthorized"),
    "INSUFFICIENT_CREDITS": (400, "insufficient_credits"),
    "INVALID_IMAGE_URL": (400, "invalid_image_url"),
    "INIT_IMAGE_NOT_FOUND": (400, "init_image_not_found"),
    "INIT_IMAGE_NOT_OWNED": (401, "init_image_not_owned"),
    "INVALID_IMAGE": (400, "invalid_file"),
    "UNSUPPORTED_IMAGE": (400, "invalid_content_type"),
    "PAYLOAD_TOO_LARGE": (413, "file_too_large"),
    "RATE_LIMIT_EXCEEDED": (429, "rate_limit_exceeded"),
    "INTERNAL_ERROR": (500, "internal_error"),
}
PARAM_CODES = {"model": "invalid_model_id", "scheduler": "invalid_scheduler_id"}
ROUTING = ("NOT_FOUND", "METHOD_NOT_ALLOWED", "HTTP_ERROR")


def render_stablecog_error(exc: ImagesmithError) -> JSONResponse:
    status, error = exc.status_code, exc.code.lower()
    if isinstance(exc, MalformedJson):
        error = "json_parse_error"
    elif isinstance(exc, ParamError) and exc.kind in PARAM_CODES:
        error = PARAM_CODES[exc.kind]
    elif exc.code in CODES:
        status, error = CODES[exc.code]
    elif exc.code == "VALIDATION_ERROR":
        error = exc.message  # Stablecog answers validation problems as free text
    elif exc.code in ROUTING:
        error = HTTPStatus(status).phrase
    return stablecog_response(status, error, exc.message, exc.headers)


def stablecog_response(
    status: int,
    error: str,
    description: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if description:
        body["description"] = description
    body.update(extra)
    return JSONResponse(
        body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )
