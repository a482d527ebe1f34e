"""devkit4ai's error shape is FastAPI's own: `{"detail": "..."}`, or for invalid requests
`{"detail": [{"loc", "msg", "type"}]}` with 422; a 429 adds `retry_after`."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from imagesmith.errors import ImagesmithError


class DevkitError(BaseModel):
    detail: str | list[dict[str, Any]]
    retry_after: int | None = None


ERROR_TEXT = {
    400: "Invalid request",
    401: "Could not validate credentials (token, X-API-Key)",
    403: "Insufficient permissions (X-Project-ID, X-Developer-Key, X-User-Role)",
    404: "Not found (or not yours)",
    413: "File too large",
    422: "Invalid input: no images, more than 5, a wrong format, bad instructions",
    429: "Rate limit, quota or concurrency cap reached; see retry_after",
}


def render_devkit_error(exc: ImagesmithError) -> JSONResponse:
    status = exc.status_code
    detail: Any = exc.message
    if status == 400:  # FastAPI answers every invalid request with 422
        status = 422
        if exc.details:
            detail = exc.details
    body: dict[str, Any] = {"detail": detail}
    headers = {"Cache-Control": "no-store", **exc.headers}
    if status == 429:
        retry = headers.get("Retry-After", "60")
        body["retry_after"] = int(retry) if retry.isdigit() else 60
        headers.setdefault("Retry-After", str(body["retry_after"]))
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=headers)
