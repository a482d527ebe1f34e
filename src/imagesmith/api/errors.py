"""Error rendering. Each dialect owns a path prefix and an error shape; one handler picks it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesmith.errors import ImagesmithError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    success: bool = False
    error: ErrorDetail


ERROR_TEXT = {
    400: "Invalid input (VALIDATION_ERROR), including malformed JSON",
    401: "Missing, invalid, expired or revoked API key (UNAUTHORIZED)",
    403: "The key may not do this (FORBIDDEN)",
    404: "Not found in this project",
    409: "Conflict with the current state",
    413: "The upload is too large (PAYLOAD_TOO_LARGE)",
    429: "Too many requests for this key (RATE_LIMIT_EXCEEDED); see Retry-After",
    500: "The generation failed (GENERATION_FAILED) or a server bug (INTERNAL_ERROR)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route's documented errors."""
    return {code: {"model": ErrorEnvelope, "description": ERROR_TEXT[code]} for code in codes}


def keyed_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Errors of a route behind an API key: always 401, 403 and 429, plus its own."""
    return error_responses(*sorted({401, 403, 429, *codes}))


def native_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": {"code": code, "message": message, **extra}}
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        kind = error.get("type", "")
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"Malformed JSON body: {reason}")
        elif kind == "missing" and not where:
            parts.append("A JSON request body is required")
        elif kind == "missing":
            parts.append(f"{where} is required")
        elif kind == "extra_forbidden":
            parts.append(f"Unknown field '{where}'")
        elif kind == "model_attributes_type" or (kind.endswith("_type") and not where):
            parts.append(f"The request body must be a JSON object ({message})")
        else:
            got = error.get("input")
            shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
            if shown and repr(got) in message:
                shown = ""
            named = not where or message.startswith(loc[-1])
            parts.append(f"{message}{shown}" if named else f"{where}: {message}{shown}")
    return "; ".join(parts) or "Invalid request"


def is_stablecog(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def install_error_handlers(app: FastAPI) -> None:
    """One handler per kind of error; each renders in the dialect that owns the path."""
    from imagesmith.api.stablecog.errors import stablecog_error, stablecog_response

    @app.exception_handler(ImagesmithError)
    async def _expected(request: Request, exc: ImagesmithError) -> JSONResponse:
        if is_stablecog(request):
            return stablecog_error(exc)
        return native_error(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = describe_validation(exc)
        content_type = request.headers.get("content-type", "")
        body_problem = any(
            e.get("loc", ())[:1] == ("body",) and len(e.get("loc", ())) == 1 for e in exc.errors()
        )
        if (
            body_problem
            and "json" not in content_type
            and request.method in ("POST", "PUT", "PATCH")
        ):
            message = (
                "Send the body as JSON with 'Content-Type: application/json' "
                f"(got '{content_type or 'no Content-Type'}')"
            )
        if is_stablecog(request):
            malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
            return stablecog_response(400, "json_parse_error" if malformed else message, message)
        return native_error(400, "VALIDATION_ERROR", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_stablecog(request):
            return stablecog_response(exc.status_code, str(exc.detail))
        if exc.status_code == 404:
            return native_error(
                404, "NOT_FOUND", f"No route for {request.method} {request.url.path}"
            )
        if exc.status_code == 405:
            return native_error(
                405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}"
            )
        return native_error(exc.status_code, "HTTP_ERROR", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.crashed method=%s path=%s", request.method, request.url.path)
        return native_error(500, "INTERNAL_ERROR", "Internal server error; see the server log")
