"""The remote runner: jobs for models a provider runs (engines/remote/), claimed from the same
queue and run concurrently in this process, at most IMAGESMITH_REMOTE_CONCURRENCY per
provider, with no model child and no torch. Remote jobs never wait behind local ones: this
runner claims only remote models' jobs, and the local worker only local ones.

A job here is a lease like any other (renewed while it runs; a dead process's jobs return to
the queue). What the provider answers is data: a refusal fails the job with the provider's
message; "busy" (429, 5xx, a broken connection) is retried after Retry-After or a growing
backoff, within the job's deadline (IMAGESMITH_JOB_TIMEOUT_SECONDS) and without counting as a
crash retry; a cancelled job is cancelled at the provider where it has a cancel. The images
(bytes, or URLs fetched with the same SSRF guard as image URLs) are checked, re-encoded as PNG
and stored in our store, so their URLs are ours and durable."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
from PIL import Image as PILImage

from imagesmith.catalog.models import ModelSpec
from imagesmith.engines.remote import engine_for
from imagesmith.engines.remote.base import (
    ProviderBusy,
    ProviderConfig,
    ProviderRejected,
    RemoteCancelled,
    RemoteEngine,
    RemoteJob,
    RemoteResult,
    decode_b64,
    sleep_or_cancel,
)
from imagesmith.generation.jobs import ClaimedJob, JobQueue
from imagesmith.image.fetch import UnsafeUrl, fetch_image_bytes, resolver_for
from imagesmith.runtime import Runtime

log = logging.getLogger(__name__)
CANCEL_CHECK_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
CANCEL_GRACE_SECONDS = 10.0  # an engine that cancels at the provider gets this long to do it
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class Output:
    png: bytes
    width: int
    height: int


def provider_config(runtime: Runtime, provider: str) -> ProviderConfig:
    s = runtime.settings
    key, base = {
        "replicate": (s.replicate_api_token, s.replicate_base_url),
        "openai": (s.openai_api_key, s.openai_base_url),
        "openai-compatible": (s.openai_compatible_api_key, ""),  # each model names its base_url
        "gemini": (s.gemini_api_key, s.gemini_base_url),
    }[provider]
    return ProviderConfig(provider, key, base, s.remote_request_timeout_seconds)


class RemoteRunner:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.settings = runtime.settings
        self.specs = {spec.id: spec for spec in runtime.registry.remote()}
        providers = {spec.provider for spec in self.specs.values() if spec.provider}
        self.engines: dict[str, RemoteEngine] = {
            name: engine_for(name, provider_config(runtime, name)) for name in providers
        }
        self.worker_id = f"{socket.gethostname()[:100]}-{os.getpid()}-remote-{secrets.token_hex(3)}"
        self.queue = JobQueue(runtime, self.worker_id)
        self.running: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.finished = asyncio.Event()

    def _free_models(self) -> list[str]:
        limit = self.settings.remote_concurrency
        return [
            spec.id
            for spec in self.specs.values()
            if spec.provider and len(self.running[spec.provider]) < limit
        ]

    async def run(self, stop: asyncio.Event) -> None:
        if not self.specs:
            return
        log.info(
            "remote.started worker_id=%s models=%s", self.worker_id, ",".join(sorted(self.specs))
        )
        await self.queue.register(socket.gethostname(), os.getpid())
        beating = asyncio.ensure_future(self._beat())
        timeout = httpx.Timeout(self.settings.remote_request_timeout_seconds)
        for name in self.engines:
            self.clients[name] = httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False
            )
        try:
            while not stop.is_set():
                free = self._free_models()
                jobs: list[ClaimedJob] = []
                if free:
                    try:
                        await self.queue.requeue_expired()
                        jobs = await self.queue.claim(1, free)
                    except Exception as exc:  # the database blipped: the next round retries
                        log.warning("remote.claim_failed error=%r", exc)
                for job in jobs:
                    self._start(job)
                if jobs:
                    continue
                await self._idle(stop, busy=not free)
        finally:
            await self._stop_running()
            beating.cancel()
            for client in self.clients.values():
                await client.aclose()
            await self.queue.stopped()
            log.info("remote.stopped worker_id=%s", self.worker_id)

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                running = sum(len(tasks) for tasks in self.running.values())
                await self.queue.beat("remote", running)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _idle(self, stop: asyncio.Event, *, busy: bool) -> None:
        """Until work may be queued (or, with every slot taken, a job ends), or stop."""
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self.finished.wait()),
        ]
        if not busy:
            waits.append(
                asyncio.ensure_future(self.rt.notifier.wait_for_work(self.queue.look_due_in()))
            )
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED, timeout=None)
        for task in waits:
            task.cancel()
        self.finished.clear()

    def _start(self, job: ClaimedJob) -> None:
        spec = self.specs[job.params.model_id]
        provider = spec.provider or ""
        task = asyncio.ensure_future(self._run_job(spec, job))
        self.running[provider].add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self.running[provider].discard(finished)
            self.finished.set()

        task.add_done_callback(done)

    async def _stop_running(self) -> None:
        """A stopping worker lets running jobs finish for the grace period, then hands the rest
        back (no retry counted)."""
        tasks = {task for tasks in self.running.values() for task in tasks}
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # One job ------------------------------------------------------------------------------

    async def _run_job(self, spec: ModelSpec, job: ClaimedJob) -> None:
        provider = spec.provider or ""
        engine = self.engines[provider]
        # Set when the job is cancelled on our side, or when its deadline passes: either way
        # the engine stops, and cancels at the provider where it can (no orphan prediction
        # running up a bill after we gave up on it).
        stop = asyncio.Event()
        cancelled = asyncio.Event()
        leases = asyncio.ensure_future(self._renew(job))
        watcher = asyncio.ensure_future(self._watch(job, cancelled, stop))
        started = time.monotonic()
        deadline = float(spec.extra.get("timeout_seconds", self.settings.job_timeout_seconds))
        timer = asyncio.get_running_loop().call_later(deadline, stop.set)
        timed_out = (
            f"{provider} did not finish within {deadline:g} s (the model's timeout_seconds, "
            "or IMAGESMITH_JOB_TIMEOUT_SECONDS)"
        )
        remote = RemoteJob(
            job.generation_id, job.prompt, job.negative_prompt, job.params, job.init_image
        )
        try:
            try:
                async with asyncio.timeout(deadline + CANCEL_GRACE_SECONDS + 5):  # a hard stop
                    result = await self._attempts(engine, spec, remote, stop)
                    outputs = await self._outputs(result, provider, job.params.num_outputs)
            except TimeoutError:
                raise ProviderRejected(timed_out) from None
            except RemoteCancelled:
                if not cancelled.is_set():
                    raise ProviderRejected(timed_out) from None
                raise
            result.info["seconds"] = round(time.monotonic() - started, 3)
            await self.queue.succeed(job, outputs, meta={"provider": result.info})
        except RemoteCancelled as exc:
            log.info("remote.cancelled generation_id=%s %s", job.generation_id, exc.message)
        except ProviderRejected as exc:
            if cancelled.is_set():
                return  # the row is cancelled already; whatever the provider said is moot
            await self.queue.fail(job, exc.message)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.queue.release([job], count_retry=False, reason="worker shut down")
                )
            raise
        except Exception as exc:
            log.exception("remote.crashed generation_id=%s", job.generation_id)
            await self.queue.release([job], count_retry=True, reason=f"remote error: {exc!r}"[:300])
        finally:
            timer.cancel()
            leases.cancel()
            watcher.cancel()

    async def _attempts(
        self, engine: RemoteEngine, spec: ModelSpec, job: RemoteJob, cancelled: asyncio.Event
    ) -> RemoteResult:
        """Run the engine; a busy provider is asked again after Retry-After or a backoff."""
        backoff = BACKOFF_FIRST
        tries = 0
        client = self.clients[spec.provider or ""]
        while True:
            tries += 1
            try:
                return await self._unless_cancelled(engine, client, spec, job, cancelled)
            except ProviderBusy as exc:
                wait = exc.retry_after if exc.retry_after is not None else backoff
                wait = min(max(wait, 0.1), BACKOFF_MAX)
                backoff = min(backoff * 2, BACKOFF_MAX)
                log.warning(
                    "remote.busy generation_id=%s provider=%s try=%d retry_in=%.1fs error=%s",
                    job.job_id,
                    spec.provider,
                    tries,
                    wait,
                    exc.message,
                )
                await sleep_or_cancel(cancelled, wait)
                if cancelled.is_set():
                    raise RemoteCancelled("cancelled while the provider was busy") from None

    async def _unless_cancelled(
        self,
        engine: RemoteEngine,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        cancelled: asyncio.Event,
    ) -> RemoteResult:
        """The engine's run, abandoned when the job is cancelled (an engine that cancels at
        the provider itself is given CANCEL_GRACE_SECONDS to do so)."""
        running = asyncio.ensure_future(engine.run(client, spec, job, cancelled))
        stopping = asyncio.ensure_future(cancelled.wait())
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done():
                grace = CANCEL_GRACE_SECONDS if getattr(engine, "cancels", False) else 0.0
                try:  # its own answer (RemoteCancelled, or a result that won the race)
                    return await asyncio.wait_for(asyncio.shield(running), grace)
                except TimeoutError:
                    running.cancel()
                    raise RemoteCancelled(
                        "cancelled; the provider's request was abandoned"
                    ) from None
            return running.result()
        finally:
            stopping.cancel()
            if not running.done():
                running.cancel()

    async def _outputs(self, result: RemoteResult, provider: str, wanted: int) -> list[Output]:
        """The images asked for, no more: a provider that sends extra is not fetched, decoded
        or stored beyond `wanted` (fewer is billed as fewer: `JobQueue.succeed_all`). An output
        URL that cannot be fetched is tried twice, then fails the job: the paid prediction is
        not run again for it. Decoding and re-encoding runs beside the event loop."""
        blobs = list(result.images)[:wanted]
        for url in result.urls[: wanted - len(blobs)]:
            if url.startswith("data:"):
                blobs.append(decode_b64(url, provider))
                continue
            blobs.append(await self._fetch_output(url, provider))
        if len(result.images) + len(result.urls) > wanted:
            log.warning(
                "remote.extra_outputs provider=%s sent=%d wanted=%d",
                provider,
                len(result.images) + len(result.urls),
                wanted,
            )
        if not blobs:
            raise ProviderRejected(f"{provider} sent no image")
        return [await asyncio.to_thread(as_png, blob, provider) for blob in blobs]

    async def _fetch_output(self, url: str, provider: str) -> bytes:
        for attempt in range(2):
            try:
                return await fetch_image_bytes(
                    url,
                    max_bytes=self.settings.remote_max_output_bytes,
                    timeout=self.settings.remote_request_timeout_seconds,
                    allow_private=self.settings.allow_private_urls,
                    resolve=resolver_for(f"provider:{provider}"),
                )
            except UnsafeUrl as exc:
                if attempt:
                    raise ProviderRejected(f"fetching {provider}'s output: {exc.message}") from None
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    async def _renew(self, job: ClaimedJob) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.queue.renew([job])

    async def _watch(self, job: ClaimedJob, cancelled: asyncio.Event, stop: asyncio.Event) -> None:
        """Cancelled (or re-queued, or deleted) on our side: tell the engine."""
        while True:
            await asyncio.sleep(CANCEL_CHECK_SECONDS)
            with contextlib.suppress(Exception):
                if job.generation_id not in await self.queue.still_held([job]):
                    cancelled.set()
                    stop.set()
                    return


def as_png(data: bytes, provider: str) -> Output:
    """The provider's image, checked (a real image, not a decompression bomb) and re-encoded
    as PNG like every image we store."""
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ProviderRejected(f"{provider} sent a {width}x{height} image: too large")
            probe.load()
            image = probe.convert("RGBA" if probe.mode in ("RGBA", "LA", "P") else "RGB")
    except ProviderRejected:
        raise
    except Exception:
        raise ProviderRejected(f"{provider} sent something that is not an image") from None
    out = io.BytesIO()
    image.save(out, format="PNG")
    return Output(out.getvalue(), width, height)
