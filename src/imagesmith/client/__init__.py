"""The imagesmith Python SDK: a typed client for the native API, sync and async.

    from imagesmith.client import Client

    with Client("http://127.0.0.1:8000", api_key="ims_...") as client:
        generation = client.generate("a red circle on a blue background", aspect_ratio="16:9")
        generation.download("circle.png")

It needs only httpx, httpx-sse and pydantic (`pip install imagesmith`, no server parts)."""

from imagesmith.client._async import AsyncClient, AsyncPage, AsyncPager
from imagesmith.client._base import Timeouts
from imagesmith.client._sync import Client, Page
from imagesmith.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GenerationFailedError,
    ImagesmithError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    WaitTimeoutError,
)
from imagesmith.client.models import (
    Flow,
    Generation,
    GenerationEvent,
    Image,
    LiveScope,
    OutputImage,
    Progress,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncPage",
    "AsyncPager",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Flow",
    "Generation",
    "GenerationEvent",
    "GenerationFailedError",
    "Image",
    "ImagesmithError",
    "InternalServerError",
    "LiveScope",
    "NotFoundError",
    "OutputImage",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Progress",
    "RateLimitError",
    "Timeouts",
    "WaitTimeoutError",
]
