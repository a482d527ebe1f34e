"""The asyncio client: the same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from imagesmith.client import calls
from imagesmith.client._base import (
    BaseClient,
    Call,
    M,
    PageData,
    T,
    finished,
    stream_timeout,
)
from imagesmith.client.errors import APIConnectionError, APIStatusError, ImagesmithError, error_for
from imagesmith.client.models import DELETED, TERMINAL, Generation, GenerationEvent

P = ParamSpec("P")
R = TypeVar("R")
AsyncProgressCallback = Callable[[GenerationEvent], Awaitable[None] | None]


class _Resource:
    def __init__(self, client: AsyncClient):
        self._client = client


def _call(
    build: Callable[P, Call[R]],
) -> Callable[Concatenate[_Resource, P], Coroutine[Any, Any, R]]:
    async def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._client._run(build(*args, **kwargs))

    return functools.update_wrapper(method, build)


def _paged(
    build: Callable[P, Call[PageData[M]]],
) -> Callable[Concatenate[_Resource, P], AsyncPager[M]]:
    def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> AsyncPager[M]:
        return AsyncPager(self._client, build(*args, **kwargs))

    return functools.update_wrapper(method, build)


class AsyncPager(Generic[M]):
    """What a list call returns: `await` it for the first page, or `async for` over it for
    every item of every page."""

    def __init__(self, client: AsyncClient, call: Call[PageData[M]]):
        self._client, self._call = client, call

    async def _first(self) -> AsyncPage[M]:
        return AsyncPage(self._client, self._call, await self._client._run(self._call))

    def __await__(self) -> Generator[Any, None, AsyncPage[M]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[M]:
        async for item in await self._first():
            yield item


class AsyncPage(Generic[M]):
    """One page (`.data`, `.total`, `.has_more`); `async for` walks every later page too."""

    def __init__(self, client: AsyncClient, call: Call[PageData[M]], page: PageData[M]):
        self._client, self._call, self._page = client, call, page
        self.data, self.total, self.has_more = page.data, page.total, page.has_more

    async def next_page(self) -> AsyncPage[M] | None:
        if not self.has_more:
            return None
        call = self._call.next_page(self._page.limit, self._page.offset)
        return AsyncPage(self._client, call, await self._client._run(call))

    async def __aiter__(self) -> AsyncIterator[M]:
        page: AsyncPage[M] | None = self
        while page is not None:
            for item in page.data:
                yield item
            page = await page.next_page()


class AsyncGenerations(_Resource):
    create = _call(calls.generations_create)
    get = _call(calls.generations_get)
    list = _paged(calls.generations_list)
    update = _call(calls.generations_update)
    regenerate = _call(calls.generations_regenerate)
    cancel = _call(calls.generations_cancel)
    delete = _call(calls.generations_delete)

    def events(self, generation_id: str) -> AsyncIterator[GenerationEvent]:
        """The generation's status and progress as the server pushes them, until it ends."""
        return self._client._events(generation_id, time.monotonic() + 24 * 3600)


class AsyncImages(_Resource):
    upload = _call(calls.images_upload)
    get = _call(calls.images_get)
    list = _paged(calls.images_list)
    set_alias = _call(calls.images_set_alias)
    delete = _call(calls.images_delete)


class AsyncFlows(_Resource):
    list = _paged(calls.flows_list)
    get = _call(calls.flows_get)
    generations = _paged(calls.flows_generations)
    images = _paged(calls.flows_images)
    set_aliases = _call(calls.flows_set_aliases)
    delete_alias = _call(calls.flows_delete_alias)
    regenerate = _call(calls.flows_regenerate)
    delete = _call(calls.flows_delete)


class AsyncLive(_Resource):
    create = _call(calls.live_create)
    list = _paged(calls.live_list)
    get = _call(calls.live_get)
    update = _call(calls.live_update)
    delete = _call(calls.live_delete)
    regenerate = _call(calls.live_regenerate)


class AsyncClient(BaseClient):
    """`AsyncClient(base_url, api_key=...)`; use `async with`, or `await client.close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ):
        super().__init__(base_url, api_key, **options)
        self._http = http_client or httpx.AsyncClient(timeout=self.timeouts.httpx())
        self.generations = AsyncGenerations(self)
        self.images = AsyncImages(self)
        self.flows = AsyncFlows(self)
        self.live = AsyncLive(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # Sending -----------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        return self._finish(call, await self._send(call))

    async def _send(self, call: Call[Any]) -> httpx.Response:
        headers = {**self._headers, **call.headers}
        attempt = 0
        while True:
            try:
                response = await self._http.request(**{**self._request(call), "headers": headers})
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc)
            else:
                answer_delay = self._after_answer(call, attempt, response)
                if answer_delay is None:
                    return response
                delay = answer_delay
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def download(self, url: str, path: str | Path) -> Path:
        """Save the bytes at an image URL (a storageUrl) to `path` (no key goes with it)."""
        url = self.base_url + url if url.startswith("/") else url
        try:
            response = await self._http.get(url, follow_redirects=True)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"GET {url}: {exc!r}", exc.request) from exc
        if response.status_code >= 400:
            raise error_for(response)
        target = Path(path)
        target.write_bytes(response.content)
        return target

    # Waiting -----------------------------------------------------------------------------

    async def generate(
        self,
        prompt: str,
        *,
        on_progress: AsyncProgressCallback | None = None,
        timeout: float = 600.0,
        raise_on_failure: bool = True,
        **options: Any,
    ) -> Generation:
        """Create a generation and wait until it ends; see `Client.generate`."""
        generation = await self.generations.create(prompt, **options)
        return await self.wait(
            generation.id,
            on_progress=on_progress,
            timeout=timeout,
            raise_on_failure=raise_on_failure,
        )

    async def wait(
        self,
        generation_id: str,
        *,
        on_progress: AsyncProgressCallback | None = None,
        timeout: float = 600.0,
        raise_on_failure: bool = True,
    ) -> Generation:
        """Wait for a generation to end; returns it finished."""
        deadline = time.monotonic() + timeout
        events = self._events(generation_id, deadline)
        while True:
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
            except (ImagesmithError, SSEError, ValueError) as exc:
                if not self._stream_retry(exc):
                    raise
                break  # no stream through this proxy, or it broke: polling takes over
            await report(on_progress, event)
        generation = await self._poll(generation_id, deadline, on_progress)
        return finished(generation, timeout, raise_on_failure)

    async def _poll(
        self, generation_id: str, deadline: float, on_progress: AsyncProgressCallback | None
    ) -> Generation:
        interval, last = 0.25, None
        while True:
            try:
                generation = await self.generations.get(generation_id)
            except (APIConnectionError, APIStatusError) as exc:
                if not self._stream_retry(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if generation.done or time.monotonic() >= deadline:
                    return generation
                event = GenerationEvent.model_validate(generation.model_dump())
                if event != last:
                    await report(on_progress, event)
                last = event
            await asyncio.sleep(max(min(interval, deadline - time.monotonic()), 0.0))
            interval = min(interval * 1.5, 2.0)

    async def _events(self, generation_id: str, deadline: float) -> AsyncIterator[GenerationEvent]:
        path = self.base_url + f"/api/v1/generations/{calls._id(generation_id)}/events"
        drops = 0
        while time.monotonic() < deadline and drops <= 3:
            timeout = stream_timeout(self.timeouts.connect, deadline)
            try:
                async with aconnect_sse(
                    self._http, "GET", path, headers=dict(self._headers), timeout=timeout
                ) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise error_for(source.response)
                    async for sse in source.aiter_sse():
                        if time.monotonic() >= deadline:
                            return
                        if sse.event != "generation":
                            continue  # keep-alives
                        if DELETED in sse.data and json.loads(sse.data).get("status") == DELETED:
                            return  # deleted meanwhile: the stream ends (a read then says 404)
                        event = GenerationEvent.model_validate_json(sse.data)
                        yield event
                        if event.status in TERMINAL:
                            return
            except httpx.TransportError as exc:
                if drops >= 3:
                    raise APIConnectionError(f"event stream: {exc!r}") from exc
            drops += 1
            await asyncio.sleep(max(min(0.25 * 2**drops, deadline - time.monotonic()), 0.0))


async def report(on_progress: AsyncProgressCallback | None, event: GenerationEvent) -> None:
    if on_progress is not None:
        outcome = on_progress(event)
        if outcome is not None:
            await outcome
