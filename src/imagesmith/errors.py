"""One error base class; each dialect's handler renders it in its own shape."""

from __future__ import annotations


class ImagesmithError(Exception):
    """An expected condition with an HTTP status, a stable code and a message naming the fix."""

    status_code = 400
    code = "BAD_REQUEST"
    # Per-field problems ({loc, msg, type}), for dialects that list them (FastAPI's 422 shape).
    details: list[dict[str, object]] | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class ValidationFailed(ImagesmithError):
    status_code = 400
    code = "VALIDATION_ERROR"


class Unauthorized(ImagesmithError):
    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(ImagesmithError):
    status_code = 403
    code = "FORBIDDEN"


class NotFound(ImagesmithError):
    status_code = 404
    code = "NOT_FOUND"


class GenerationNotFound(NotFound):
    code = "GENERATION_NOT_FOUND"

    def __init__(self, generation_id: str):
        super().__init__(f"Generation '{generation_id}' not found in this project")


class ImageNotFound(NotFound):
    code = "IMAGE_NOT_FOUND"


class Conflict(ImagesmithError):
    status_code = 409
    code = "CONFLICT"


class AliasConflict(Conflict):
    code = "ALIAS_CONFLICT"


class Overloaded(ImagesmithError):
    """Every database connection stayed busy past the pool's timeout: retry, it is not a bug."""

    status_code = 503
    code = "SERVER_BUSY"

    def __init__(self) -> None:
        super().__init__(
            "The server is too busy to take this request now; retry in a few seconds",
            headers={"Retry-After": "5"},
        )
