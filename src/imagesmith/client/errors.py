"""The exceptions the SDK raises, one tree:

ImagesmithError
├── APIConnectionError           the server could not be reached (after retries)
│   └── APITimeoutError          … or did not answer within the timeout
├── APIStatusError               the server answered 4xx/5xx: .status_code, .code, .message
│   ├── BadRequestError          400, 422
│   ├── AuthenticationError      401
│   ├── PermissionDeniedError    403
│   ├── NotFoundError            404
│   ├── ConflictError            409
│   ├── PayloadTooLargeError     413
│   ├── RateLimitError           429 (.retry_after, in seconds, when the server said)
│   └── InternalServerError      5xx
├── GenerationFailedError        the generation ended failed or cancelled: .generation
└── WaitTimeoutError             still running when the wait ran out: .generation
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from imagesmith.client.models import Generation


class ImagesmithError(Exception):
    """Base of everything this SDK raises."""


class APIConnectionError(ImagesmithError):
    def __init__(self, message: str, request: httpx.Request | None = None):
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    pass


class APIStatusError(ImagesmithError):
    """The server answered with an error status; `code` and `message` are its own words."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        code: str | None = None,
        body: Any = None,
    ):
        super().__init__(f"{response.status_code} {code or ''}: {message}".replace("  ", " "))
        self.message = message
        self.code = code
        self.body = body
        self.response = response
        self.status_code = response.status_code
        self.retry_after: float | None = retry_after(response)


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
}


class GenerationFailedError(ImagesmithError):
    """The generation ended without images (failed, or cancelled)."""

    def __init__(self, generation: Generation):
        reason = generation.error_message or f"the generation was {generation.status}"
        super().__init__(f"Generation {generation.id} {generation.status}: {reason}")
        self.generation = generation


class WaitTimeoutError(ImagesmithError):
    """The wait ran out while the generation was still pending or processing (it goes on)."""

    def __init__(self, generation: Generation, waited: float):
        super().__init__(
            f"Generation {generation.id} is still {generation.status} after {waited:g} s"
        )
        self.generation = generation


def retry_after(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (a number, or an HTTP date), if it sent one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(float(when.timestamp()) - time.time(), 0.0)


def error_for(response: httpx.Response) -> APIStatusError:
    """The exception for an error response, reading every dialect's error shape."""
    body: Any = None
    code: str | None = None
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        message = text[:500] or message
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # native {success, error: {code, message}}; OpenAI's
            message = str(error.get("message") or message)
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):  # Stablecog {error: "..."}
            message = error
        elif "detail" in body:  # FastAPI / devkit4ai
            detail = body["detail"]
            message = detail if isinstance(detail, str) else str(detail)
    cls = STATUS_ERRORS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(message, response=response, code=str(code) if code else None, body=body)
