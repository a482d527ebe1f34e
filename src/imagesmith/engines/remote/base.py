"""What every remote engine shares: the job it gets, what it hands back, and the three ways a
provider can say no. Failures are data: a provider's refusal fails the job with its message;
"busy" (429, 5xx, a dropped connection) is retried by the runner, honouring Retry-After,
without counting against the job's crash retries."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx

from imagesmith.catalog.models import ModelSpec
from imagesmith.catalog.params import EngineParams

ANSWER_KEPT = 300  # characters of a provider's error body kept in a message
# A provider's whole answer (images inline as base64 included), read while it streams: a
# reply of gigabytes would otherwise sit in the worker's memory (the API's, when embedded).
REPLY_MAX_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    api_key: str | None
    base_url: str
    timeout: float = 120.0  # one HTTP call

    def __repr__(self) -> str:  # never print the key
        return f"ProviderConfig(name={self.name!r}, base_url={self.base_url!r})"


@dataclass(frozen=True)
class RemoteJob:
    job_id: str
    prompt: str
    negative_prompt: str | None
    params: EngineParams
    init_image: bytes | None = None  # img2img: the encoded init image


@dataclass
class RemoteResult:
    """Images as bytes, or as URLs the runner fetches (SSRF-checked, size-capped), and what
    was sent where (kept in the record's meta.provider)."""

    images: list[bytes] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ProviderRejected(ProviderError):
    """The provider refused or failed the request: the job fails with this message."""


class ProviderBusy(ProviderError):
    """Try again later (429, 5xx, a connection that broke): `retry_after` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RemoteCancelled(ProviderError):
    """The job was cancelled and the provider told (where it has a cancel)."""


class RemoteEngine(Protocol):
    provider: ClassVar[str]

    def __init__(self, config: ProviderConfig) -> None: ...

    async def run(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        cancelled: asyncio.Event,
    ) -> RemoteResult: ...


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_text(response: httpx.Response, *paths: tuple[str, ...]) -> str:
    """The provider's own words from a JSON error body (the first of `paths` that holds a
    string), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:ANSWER_KEPT].strip() or f"HTTP {response.status_code}"
    for path in paths:
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()[:ANSWER_KEPT]
    return str(body)[:ANSWER_KEPT]


def raise_for(provider: str, response: httpx.Response, message: str) -> None:
    """Map a non-2xx answer: 408/409/425/429/5xx are busy (retried), the rest refusals."""
    code = response.status_code
    if 200 <= code < 300:
        return
    text = f"{provider} answered {code}: {message}"
    if code in (408, 409, 425, 429) or code >= 500:
        raise ProviderBusy(text, retry_after(response))
    raise ProviderRejected(text)


async def send(client: httpx.AsyncClient, provider: str, request: httpx.Request) -> httpx.Response:
    """Send; a connection that fails or drops is 'busy' (the runner retries), not a crash."""
    try:
        response = await client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > REPLY_MAX_BYTES:
                raise ProviderRejected(too_long(provider))
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > REPLY_MAX_BYTES:
                    raise ProviderRejected(too_long(provider))
        finally:
            await response.aclose()
        # The body as read (decoded): the answer without the transfer's encoding headers.
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )
    except httpx.TimeoutException:
        raise ProviderBusy(f"{provider} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise ProviderBusy(f"could not reach {provider} ({type(exc).__name__})") from None


def too_long(provider: str) -> str:
    return f"{provider} answered with more than {REPLY_MAX_BYTES // (1024 * 1024)} MB"


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode()}"


def decode_b64(value: str, provider: str) -> bytes:
    try:
        if value.startswith("data:"):
            value = value.split(",", 1)[1]
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError, IndexError):
        raise ProviderRejected(f"{provider} sent an image that is not valid base64") from None


def same_origin(url: str, base: str) -> bool:
    """Whether a URL the provider handed us points at the provider itself (we send our key
    only there)."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


async def sleep_or_cancel(cancelled: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the job is cancelled."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cancelled.wait(), seconds)
