"""The blocking client."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse

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
from imagesmith.client.models import DELETED, TERMINAL, Generation, GenerationEvent, Model

P = ParamSpec("P")
R = TypeVar("R")
ProgressCallback = Callable[[GenerationEvent], None]


class _Resource:
    def __init__(self, client: Client):
        self._client = client


def _call(build: Callable[P, Call[R]]) -> Callable[Concatenate[_Resource, P], R]:
    def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._client._run(build(*args, **kwargs))

    return functools.update_wrapper(method, build)


def _paged(build: Callable[P, Call[PageData[M]]]) -> Callable[Concatenate[_Resource, P], Page[M]]:
    def method(self: _Resource, /, *args: P.args, **kwargs: P.kwargs) -> Page[M]:
        call = build(*args, **kwargs)
        return Page(self._client, call, self._client._run(call))

    return functools.update_wrapper(method, build)


class Page(Generic[M]):
    """One page (`.data`, `.total`, `.has_more`); iterating it walks every later page too."""

    def __init__(self, client: Client, call: Call[PageData[M]], page: PageData[M]):
        self._client, self._call, self._page = client, call, page
        self.data, self.total, self.has_more = page.data, page.total, page.has_more

    def next_page(self) -> Page[M] | None:
        if not self.has_more:
            return None
        call = self._call.next_page(self._page.limit, self._page.offset)
        return Page(self._client, call, self._client._run(call))

    def __iter__(self) -> Iterator[M]:
        page: Page[M] | None = self
        while page is not None:
            yield from page.data
            page = page.next_page()


class Generations(_Resource):
    create = _call(calls.generations_create)
    get = _call(calls.generations_get)
    list = _paged(calls.generations_list)
    update = _call(calls.generations_update)
    regenerate = _call(calls.generations_regenerate)
    cancel = _call(calls.generations_cancel)
    delete = _call(calls.generations_delete)

    def events(self, generation_id: str) -> Iterator[GenerationEvent]:
        """The generation's status and progress as the server pushes them, until it ends."""
        return self._client._events(generation_id, time.monotonic() + 24 * 3600)


class Images(_Resource):
    upload = _call(calls.images_upload)
    get = _call(calls.images_get)
    list = _paged(calls.images_list)
    set_alias = _call(calls.images_set_alias)
    delete = _call(calls.images_delete)


class Flows(_Resource):
    list = _paged(calls.flows_list)
    get = _call(calls.flows_get)
    generations = _paged(calls.flows_generations)
    images = _paged(calls.flows_images)
    set_aliases = _call(calls.flows_set_aliases)
    delete_alias = _call(calls.flows_delete_alias)
    regenerate = _call(calls.flows_regenerate)
    delete = _call(calls.flows_delete)


class Live(_Resource):
    create = _call(calls.live_create)
    list = _paged(calls.live_list)
    get = _call(calls.live_get)
    update = _call(calls.live_update)
    delete = _call(calls.live_delete)
    regenerate = _call(calls.live_regenerate)


class Client(BaseClient):
    """`Client(base_url, api_key=...)`; the URL and key default to IMAGESMITH_URL and
    IMAGESMITH_API_KEY. Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Any,
    ):
        super().__init__(base_url, api_key, **options)
        self._http = http_client or httpx.Client(timeout=self.timeouts.httpx())
        self.generations = Generations(self)
        self.images = Images(self)
        self.flows = Flows(self)
        self.live = Live(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Sending -----------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        result = self._finish(call, self._send(call))
        for item in result.data if isinstance(result, PageData) else [result]:
            if isinstance(item, Model):
                item._fetch = self._fetch
        return result

    def _send(self, call: Call[Any]) -> httpx.Response:
        headers = {**self._headers, **call.headers}
        attempt = 0
        while True:
            try:
                response = self._http.request(**{**self._request(call), "headers": headers})
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc)
            else:
                answer_delay = self._after_answer(call, attempt, response)
                if answer_delay is None:
                    return response
                delay = answer_delay
                response.close()
            time.sleep(delay)
            attempt += 1

    def _fetch(self, url: str) -> bytes:
        """An image's bytes. Image URLs (/cdn, presigned) are public: no key goes with them, so
        a redirect can never carry it to another host."""
        url = self.base_url + url if url.startswith("/") else url
        try:
            response = self._http.get(url, follow_redirects=True)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"GET {url}: {exc!r}", exc.request) from exc
        if response.status_code >= 400:
            raise error_for(response)
        return response.content

    def download(self, url: str, path: str | Path) -> Path:
        """Save the bytes at an image URL (a storageUrl) to `path`."""
        target = Path(path)
        target.write_bytes(self._fetch(url))
        return target

    # Waiting -----------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float = 600.0,
        raise_on_failure: bool = True,
        **options: Any,
    ) -> Generation:
        """Create a generation and wait until it ends (server-sent events; polling when the
        stream cannot be had). `options` are those of `generations.create`. Raises
        GenerationFailedError when it fails (unless `raise_on_failure=False`), WaitTimeoutError
        when `timeout` passes first (the generation goes on)."""
        generation = self.generations.create(prompt, **options)
        return self.wait(
            generation.id,
            on_progress=on_progress,
            timeout=timeout,
            raise_on_failure=raise_on_failure,
        )

    def wait(
        self,
        generation_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float = 600.0,
        raise_on_failure: bool = True,
    ) -> Generation:
        """Wait for a generation to end; returns it finished."""
        deadline = time.monotonic() + timeout
        events = self._events(generation_id, deadline)
        while True:
            try:
                event = next(events)
            except StopIteration:
                break
            except (ImagesmithError, SSEError, ValueError) as exc:
                if not self._stream_retry(exc):
                    raise
                break  # no stream through this proxy, or it broke: polling takes over
            if on_progress is not None:
                on_progress(event)
        return finished(self._poll(generation_id, deadline, on_progress), timeout, raise_on_failure)

    def _poll(
        self, generation_id: str, deadline: float, on_progress: ProgressCallback | None
    ) -> Generation:
        """Read the generation until it ends or the deadline passes; an outage or a rate limit
        meanwhile is waited out."""
        interval, last = 0.25, None
        while True:
            try:
                generation = self.generations.get(generation_id)
            except (APIConnectionError, APIStatusError) as exc:
                if not self._stream_retry(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if generation.done or time.monotonic() >= deadline:
                    return generation
                event = GenerationEvent.model_validate(generation.model_dump())
                if on_progress is not None and event != last:
                    on_progress(event)
                last = event
            time.sleep(max(min(interval, deadline - time.monotonic()), 0.0))
            interval = min(interval * 1.5, 2.0)

    def _events(self, generation_id: str, deadline: float) -> Iterator[GenerationEvent]:
        """Follow the event stream until the generation ends or the deadline passes; a dropped
        stream is reconnected (three times, backing off), then polling takes over."""
        path = self.base_url + f"/api/v1/generations/{calls._id(generation_id)}/events"
        drops = 0
        while time.monotonic() < deadline and drops <= 3:
            timeout = stream_timeout(self.timeouts.connect, deadline)
            try:
                with connect_sse(
                    self._http, "GET", path, headers=dict(self._headers), timeout=timeout
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise error_for(source.response)
                    for sse in source.iter_sse():
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
            time.sleep(max(min(0.25 * 2**drops, deadline - time.monotonic()), 0.0))
