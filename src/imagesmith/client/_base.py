"""What the sync and async clients share: settings, the description of each API call, the retry
policy and how answers become objects. Each call is described once (`Call`); `Client` and
`AsyncClient` only differ in how they send it."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx

from imagesmith.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    GenerationFailedError,
    ImagesmithError,
    WaitTimeoutError,
    error_for,
    retry_after,
)
from imagesmith.client.models import Generation, Model

T = TypeVar("T")
M = TypeVar("M", bound=Model)

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 60.0  # a Retry-After beyond this (a monthly quota) is raised, not slept through


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase of one HTTP request. Waiting for a generation is not one request:
    `generate(timeout=…)` bounds that."""

    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, how to read the answer, and whether resending is safe."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: Any = None
    data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = True  # GET/PUT/DELETE, and creates that carry an Idempotency-Key
    paged: bool = False

    def next_page(self, limit: int, offset: int) -> Call[T]:
        return replace(
            self, params={**(self.params or {}), "limit": limit, "offset": offset + limit}
        )


@dataclass
class PageData(Generic[M]):
    data: list[M]
    total: int
    limit: int
    offset: int
    has_more: bool


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def one(model: type[M]) -> Callable[[Any], M]:
    """`{success, data: {...}}` → the model."""
    return lambda body: model.model_validate(body["data"])


def many(model: type[M]) -> Callable[[Any], PageData[M]]:
    """`{success, data: [...], pagination}` → one page of models."""

    def parse(body: Any) -> PageData[M]:
        items = [model.model_validate(item) for item in body["data"]]
        page = body.get("pagination") or {}
        return PageData(
            items,
            int(page.get("total", len(items))),
            int(page.get("limit", len(items))),
            int(page.get("offset", 0)),
            bool(page.get("hasMore", False)),
        )

    return parse


def deleted(body: Any) -> str:
    """What a delete answers: the id (or a live scope's slug) of what is gone."""
    data = body.get("data") or {}
    return str(data.get("id") or data.get("slug") or "")


class BaseClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        max_retries: int = 2,
        headers: Mapping[str, str] | None = None,
    ):
        self.base_url = (base_url or os.environ.get("IMAGESMITH_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("IMAGESMITH_API_KEY")
        self.timeouts = timeouts or Timeouts()
        self.max_retries = max_retries
        self._headers = {"User-Agent": "imagesmith-python", **(headers or {})}
        if self.api_key:
            self._headers["X-API-Key"] = self.api_key

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        return drop_none(
            {
                "method": call.method,
                "url": self.base_url + call.path,
                "params": drop_none(call.params) if call.params else None,
                "json": call.json,
                "files": call.files,
                "data": call.data,
                "headers": call.headers or None,
            }
        )

    def _retry_delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before resending, or None to give up: exponential backoff with
        jitter, or the server's Retry-After when it gives one."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return None
            if response.headers.get("x-should-retry") == "false":
                return None
            after = retry_after(response)
            if after is not None:
                return after if after <= MAX_RETRY_WAIT else None
        return min(0.5 * 2.0**attempt, 8.0) * (0.75 + random.random() / 2)

    def _after_failure(self, call: Call[Any], attempt: int, exc: httpx.TransportError) -> float:
        """The wait before resending after a transport error, or the SDK's error. A request
        that never connected is always safe to resend; one that may have arrived only when
        the call is idempotent."""
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        safe = call.retry or never_sent
        delay = self._retry_delay(attempt, None) if safe else None
        if delay is None:
            kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else None
            raise (kind or APIConnectionError)(
                f"{call.method} {call.path}: {exc!r}", exc.request
            ) from exc
        return delay

    def _after_answer(
        self, call: Call[Any], attempt: int, response: httpx.Response
    ) -> float | None:
        """The wait before resending after this answer, or None to keep it (a 429 was not
        processed, so even a non-idempotent call may be resent)."""
        if response.status_code < 400 or not (call.retry or response.status_code == 429):
            return None
        return self._retry_delay(attempt, response)

    def _finish(self, call: Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_for(response)
        if response.status_code >= 300:
            where = response.headers.get("location", "?")
            raise APIStatusError(
                f"the server redirected to {where}: is the base URL right?", response=response
            )
        try:
            return call.parse(response.json() if response.content else {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ImagesmithError(
                f"{call.method} {call.path}: not an imagesmith answer ({exc!r}); is "
                f"{self.base_url} an imagesmith server?"
            ) from exc

    def _stream_retry(self, exc: Exception) -> bool:
        """Whether waiting may go on by polling after this error on the event stream: a stream
        that cannot be had (a proxy, a rate limit, a restart), not a generation that is gone."""
        if isinstance(exc, APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return True


def stream_timeout(connect: float, deadline: float) -> httpx.Timeout:
    """An event stream's timeouts: the server sends a keep-alive every 15 s, so a silence of 40 s
    is a dead connection; and reading never outlasts the caller's deadline."""
    remaining = deadline - time.monotonic()
    return httpx.Timeout(connect, read=max(min(40.0, remaining + 0.5), 0.5))


def finished(generation: Generation, waited: float, raise_on_failure: bool) -> Generation:
    """What a wait returns: the finished generation, or the error that says why not."""
    if not generation.done:
        raise WaitTimeoutError(generation, waited)
    if raise_on_failure and generation.status != "success":
        raise GenerationFailedError(generation)
    return generation
