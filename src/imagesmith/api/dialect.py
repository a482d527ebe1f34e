"""A dialect is one public API over the core: its routes, its error shape, its credentials.

Each dialect package builds one `Dialect`; `api/dialects.py` lists them and `app.py` mounts
them. Errors are rendered by the dialect that owns the *matched route*; a request that matched
no route (404, or 405) goes to the dialect whose path prefix owns it, else to the first one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesmith.errors import ImagesmithError, ValidationFailed

log = logging.getLogger(__name__)

ErrorRenderer = Callable[[ImagesmithError], Response]

# What each documented error status means; a dialect may say it in its own words.
ERROR_TEXT = {
    400: "Invalid input, named in the error",
    401: "Missing, invalid, expired or revoked key",
    402: "Not enough credits",
    403: "The key may not do this",
    404: "Not found in this project",
    405: "Method not allowed on this path",
    409: "Conflict with the current state",
    413: "The body or upload is too large",
    422: "Invalid input",
    429: "Too many requests; see Retry-After",
    500: "The generation failed, or a server bug",
    504: "Still generating: retry (see Retry-After)",
}


@dataclass(frozen=True)
class Dialect:
    name: str
    routers: Sequence[APIRouter]
    render_error: ErrorRenderer
    error_schema: type[BaseModel]  # documented on every error response of its routes
    # Paths this dialect answers for when no route matched (segment prefixes, e.g. "/v1/image").
    prefixes: Sequence[str] = ()
    error_text: dict[int, str] = field(default_factory=dict)
    validation_status: int = 400  # what invalid input answers (FastAPI-style dialects: 422)

    def owns(self, path: str) -> int:
        """Length of the longest prefix of ours that `path` falls under (0: none)."""
        return max(
            (len(p) for p in self.prefixes if path == p or path.startswith(p.rstrip("/") + "/")),
            default=0,
        )


class MalformedJson(ValidationFailed):
    """The body was not JSON at all (dialects with a separate code for it can tell)."""


class RouteNotFound(ImagesmithError):
    status_code = 404
    code = "NOT_FOUND"


class MethodNotAllowed(ImagesmithError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"


class PayloadTooLarge(ImagesmithError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class InternalError(ImagesmithError):
    status_code = 500
    code = "INTERNAL_ERROR"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route's errors; the shape is filled in per dialect."""
    return {code: {"description": ERROR_TEXT[code]} for code in codes}


def keyed_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Errors of a route behind a key: always 401, 403 and 429, plus its own."""
    return error_responses(*sorted({401, 403, 429, *codes}))


class Dialects:
    """The mounted dialects and which one owns each route."""

    def __init__(self, dialects: Sequence[Dialect]):
        self.all = list(dialects)
        self.default = self.all[0]
        self._by_route: dict[int, Dialect] = {}

    def mount(self, app: FastAPI) -> None:
        for dialect in self.all:
            for router in dialect.routers:
                app.include_router(router)
                for route in router.routes:
                    self._by_route[id(route)] = dialect
        install_error_handlers(app, self)

    def routes(self) -> list[tuple[APIRoute, Dialect]]:
        return [
            (route, dialect)
            for dialect in self.all
            for router in dialect.routers
            for route in router.routes
            if isinstance(route, APIRoute)
        ]

    def of_route(self, route: Any) -> Dialect | None:
        return self._by_route.get(id(route))

    def for_request(self, request: Request) -> Dialect:
        matched = self.of_route(request.scope.get("route"))
        if matched is not None:
            return matched
        path = request.url.path
        best = max(self.all, key=lambda d: d.owns(path))
        return best if best.owns(path) else self.default

    def document_errors(self, schema: dict[str, Any]) -> None:
        """Every error response of a route carries its own dialect's error schema; FastAPI's
        422 becomes 400 in dialects that answer invalid input with 400."""
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for dialect in self.all:
            model = dialect.error_schema
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for route, dialect in self.routes():
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                if dialect.validation_status != 422 and responses.pop("422", None) is not None:
                    responses.setdefault("400", {"description": ERROR_TEXT[400]})
                ref = {"$ref": f"#/components/schemas/{dialect.error_schema.__name__}"}
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = {"application/json": {"schema": ref}}
                        text = dialect.error_text.get(int(status))
                        if text and response.get("description") == ERROR_TEXT.get(int(status)):
                            response["description"] = text


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


def invalid_request(request: Request, exc: RequestValidationError) -> ValidationFailed:
    """A request FastAPI could not parse, as our error (every dialect answers it with 400)."""
    message = describe_validation(exc)
    content_type = request.headers.get("content-type", "")
    body_problem = any(
        e.get("loc", ())[:1] == ("body",) and len(e.get("loc", ())) == 1 for e in exc.errors()
    )
    if body_problem and "json" not in content_type and request.method in ("POST", "PUT", "PATCH"):
        message = (
            "Send the body as JSON with 'Content-Type: application/json' "
            f"(got '{content_type or 'no Content-Type'}')"
        )
    failed = (
        MalformedJson(message)
        if any(e.get("type") == "json_invalid" for e in exc.errors())
        else ValidationFailed(message)
    )
    failed.details = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return failed


def http_error(request: Request, exc: StarletteHTTPException) -> ImagesmithError:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return RouteNotFound(f"No route for {where}")
    if exc.status_code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    if exc.status_code == 413:
        return PayloadTooLarge(str(exc.detail))
    detail = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
    return ImagesmithError(
        detail, code="HTTP_ERROR", status_code=exc.status_code, headers=dict(exc.headers or {})
    )


def refuses_nul(exc: BaseException) -> bool:
    """Whether the database driver refused a NUL character (PostgreSQL text cannot hold one)."""
    seen: BaseException | None = exc
    while seen is not None:
        if "NUL (0x00)" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def install_error_handlers(app: FastAPI, dialects: Dialects) -> None:
    """One handler per kind of error; each renders in the dialect that owns the request."""

    def render(request: Request, exc: ImagesmithError) -> Response:
        return dialects.for_request(request).render_error(exc)

    @app.exception_handler(ImagesmithError)
    async def _expected(request: Request, exc: ImagesmithError) -> Response:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return render(request, invalid_request(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, http_error(request, exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        if refuses_nul(exc):  # a NUL in some input reached PostgreSQL: bad input, not a bug
            return render(
                request, ValidationFailed("Text must not contain NUL (\\u0000) characters")
            )

        log.exception("request.crashed method=%s path=%s", request.method, request.url.path)
        return render(request, InternalError("Internal server error; see the server log"))
