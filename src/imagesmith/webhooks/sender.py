"""Delivering the outbox: claim due rows, POST them signed, record each attempt.

At least once: a row is held (`locked_until`) only for one attempt's deadline, so a process
that dies mid-attempt leaves it to any sender after that; the `webhook-id` is the row's, the
same on every attempt. 2xx delivers; 410 Gone disables the endpoint; anything else (a status,
a timeout, a refused connection, a redirect: they are not followed) is retried after the next
delay of the schedule, or after the receiver's Retry-After when that is longer (capped at an
hour), and fails once the schedule has run out. Targets are resolved once per attempt and
must be public addresses unless IMAGESMITH_ALLOW_PRIVATE_URLS is on; the connection goes to
the address that was checked."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from imagesmith import __version__, metrics
from imagesmith.db.base import utcnow
from imagesmith.image.fetch import allow_all, is_public, pinned_target, resolver_for
from imagesmith.models import DeliveryStatus, WebhookDelivery
from imagesmith.runtime import Runtime
from imagesmith.webhooks.events import InvalidWebhook
from imagesmith.webhooks.repository import WebhookRepository
from imagesmith.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

RESPONSE_KEPT = 1024  # bytes of a receiver's answer kept in the delivery log
ATTEMPTS_KEPT = 20
MAX_RETRY_AFTER = 3600.0
PRUNE_EVERY = 3600.0
PRUNE_BATCH, PRUNE_BATCHES = 500, 200


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.settings = runtime.settings
        self.delays = runtime.settings.resolved_retry_delays
        self._slots = asyncio.Semaphore(runtime.settings.webhook_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruned = time.monotonic() - PRUNE_EVERY  # the first round prunes
        self._in_flight: dict[str, int] = {}  # project id → attempts under way here
        # Opened with the first delivery: its TLS context holds the CA bundle (~2.7 MB), which
        # a server that sends no webhooks never needs.
        self._client: httpx.AsyncClient | None = None

    @property
    def _hold(self) -> timedelta:
        # Longer than one attempt can take, so a live sender never loses its row mid-attempt.
        return timedelta(seconds=self.settings.webhook_timeout_seconds + 30)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No connection is kept for the next delivery: requests go to the checked address
            # (the URL's host pinned to it, SNI and Host set by hand), and httpx pools by that
            # address, so a TLS session opened and verified for one tenant's host would carry
            # another host's payload that shares its address, unverified.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    started = await self._send_due()
                except Exception as exc:  # a database hiccup: try again on the next round
                    log.warning("webhook.sender_error error=%r", exc)
                    started = 0
                if started:
                    continue
                waiting = asyncio.ensure_future(
                    self.rt.notifier.wait_for_webhooks(self.settings.webhook_poll_seconds)
                )
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiting, stopping):
                    task.cancel()
        finally:
            # Attempts under way get a moment to finish; the rest are retried later
            # (their rows stay pending and come free when the hold runs out).
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)
            for task in set(self._tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._client is not None:
                await self._client.aclose()

    async def _send_due(self) -> int:
        free = self.settings.webhook_concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            return 1
        now = utcnow()
        await self._prune(now)
        async with self.rt.db.read() as session:
            if not await WebhookRepository(session).any_due(now):
                return 0
        async with self.rt.db.transaction() as session:
            due = await WebhookRepository(session).claim_due(
                free,
                now,
                now + self._hold,
                per_project=self.settings.webhook_project_concurrency,
                in_flight=self._in_flight,
            )
        for delivery in due:
            project = delivery.project_id
            self._in_flight[project] = self._in_flight.get(project, 0) + 1
            task = asyncio.create_task(self._deliver(self.client, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._release_slot, project))
        return len(due)

    def _release_slot(self, project: str, _task: object = None) -> None:
        left = self._in_flight.get(project, 0) - 1
        if left > 0:
            self._in_flight[project] = left
        else:
            self._in_flight.pop(project, None)

    async def _prune(self, now: datetime) -> None:
        """Finished deliveries older than the retention go, at most once an hour per process."""
        if time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        before = now - timedelta(days=self.settings.webhook_retention_days)
        progress_before = now - timedelta(hours=1)
        gone = 0
        for _ in range(PRUNE_BATCHES):  # short transactions: the write lock is shared
            async with self.rt.db.transaction() as session:
                deleted = await WebhookRepository(session).prune(
                    before, progress_before, PRUNE_BATCH
                )
            gone += deleted
            if deleted < PRUNE_BATCH:
                break
        if gone:
            log.info("webhook.pruned deliveries=%d before=%s", gone, before.isoformat())

    async def _deliver(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        try:
            async with self._slots:
                await self._attempt(client, delivery)
        except Exception as exc:
            # Counted as an attempt, so no answer can keep a row pending (and re-claimed) forever.
            log.exception("webhook.attempt_crashed delivery_id=%s", delivery.id)
            with contextlib.suppress(Exception):
                async with self.rt.db.transaction() as session:
                    outcome = Outcome(None, f"internal error ({type(exc).__name__})")
                    await self._record(WebhookRepository(session), delivery, outcome, utcnow())

    async def _attempt(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        now = utcnow()
        async with self.rt.db.read() as session:
            repo = WebhookRepository(session)
            endpoint = None
            if delivery.endpoint_id is not None:
                endpoint = await repo.endpoint_any(delivery.endpoint_id)
            secrets = await repo.signing_secrets(delivery.project_id, now)
        if delivery.endpoint_id is not None and (endpoint is None or not endpoint.enabled):
            why = "the endpoint was deleted" if endpoint is None else "the endpoint is disabled"
            async with self.rt.db.transaction() as session:
                await self._record(
                    WebhookRepository(session), delivery, Outcome(None, why), now, give_up=True
                )
            return
        if not secrets:  # written before the project had a secret (cannot happen via outbox)
            async with self.rt.db.transaction() as session:
                repo = WebhookRepository(session)
                await repo.ensure_secret(delivery.project_id)
                secrets = await repo.signing_secrets(delivery.project_id, now)
        if not secrets:  # the project is gone: never send a payload unsigned
            async with self.rt.db.transaction() as session:
                outcome = Outcome(None, "the project has no signing secret")
                await self._record(WebhookRepository(session), delivery, outcome, now, give_up=True)
            return
        # An endpoint edited since the row was written: its new URL.
        url = endpoint.url if endpoint is not None else delivery.url
        began = time.monotonic()
        outcome = await self._post(client, delivery, url, secrets)
        took_ms = int((time.monotonic() - began) * 1000)
        async with self.rt.db.transaction() as session:
            repo = WebhookRepository(session)
            gone = outcome.status_code == 410
            await self._record(repo, delivery, outcome, utcnow(), give_up=gone, took_ms=took_ms)
            if gone and delivery.endpoint_id is not None:
                endpoint = await repo.endpoint_any(delivery.endpoint_id)
                if endpoint is not None:
                    endpoint.enabled = False
                    endpoint.disabled_reason = "The endpoint answered 410 Gone"
                    await repo.fail_pending_for_endpoint(endpoint.id, "endpoint disabled (410)")
                    log.warning("webhook.endpoint_disabled endpoint_id=%s", endpoint.id)

    async def _post(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, url: str, secrets: list[str]
    ) -> Outcome:
        policy = allow_all if self.settings.allow_private_urls else is_public
        body = delivery.payload.encode()
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                pinned, host_header, server_name = await pinned_target(
                    url,
                    resolver_for(delivery.project_id),
                    policy,
                    what="webhook URL",
                    error=InvalidWebhook,
                )
                headers = {
                    **signed_headers(secrets, delivery.message_id, int(time.time()), body),
                    "Host": host_header,
                    "Content-Type": "application/json",
                    "User-Agent": f"imagesmith-webhooks/{__version__}",
                }
                request = client.build_request(
                    "POST",
                    pinned,
                    content=body,
                    headers=headers,
                    timeout=timeout,
                    extensions={"sni_hostname": server_name},
                )
                response = await client.send(request, stream=True)
                try:
                    kept = await _read_some(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(None, f"no answer within {timeout:g} s")
        except InvalidWebhook as exc:
            return Outcome(None, exc.message)
        except httpx.HTTPError as exc:
            return Outcome(None, f"could not connect ({type(exc).__name__})")
        error = None
        if not 200 <= response.status_code < 300:
            error = f"HTTP {response.status_code}"
            if response.is_redirect:
                error += " (redirects are not followed)"
            if kept:
                error += ": " + kept
        return Outcome(response.status_code, error, _retry_after(response))

    async def _record(
        self,
        repo: WebhookRepository,
        delivery: WebhookDelivery,
        outcome: Outcome,
        now: datetime,
        *,
        give_up: bool = False,
        took_ms: int | None = None,
    ) -> None:
        row = await repo.delivery(delivery.project_id, delivery.id)
        if row is None or row.status is not DeliveryStatus.PENDING:
            return  # finished meanwhile (a sender that outlived its hold, a disabled endpoint)
        row.attempts += 1
        row.last_attempt_at = now
        row.last_status_code = outcome.status_code
        row.last_error = outcome.error
        row.locked_until = None
        entry = {"at": now.isoformat(), "statusCode": outcome.status_code, "error": outcome.error}
        if took_ms is not None:
            entry["durationMs"] = took_ms
        row.attempt_log = [*(row.attempt_log or []), entry][-ATTEMPTS_KEPT:]
        if outcome.delivered:
            row.status, row.delivered_at, row.next_attempt_at = DeliveryStatus.DELIVERED, now, None
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            log.info(
                "webhook.delivered delivery_id=%s webhook_id=%s event=%s status_code=%s attempt=%d",
                row.id,
                row.message_id,
                row.event_type,
                outcome.status_code,
                row.attempts,
            )
            return
        if give_up or row.attempts >= row.max_attempts:
            row.status, row.next_attempt_at = DeliveryStatus.FAILED, None
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            log.warning(
                "webhook.failed delivery_id=%s webhook_id=%s event=%s attempts=%d error=%r",
                row.id,
                row.message_id,
                row.event_type,
                row.attempts,
                outcome.error,
            )
            return
        # The schedule as it is now (a row written under a longer one keeps its last delay).
        delay = self.delays[min(row.attempts - 1, len(self.delays) - 1)] if self.delays else 60.0
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
        row.next_attempt_at = now + timedelta(seconds=delay)
        metrics.WEBHOOK_DELIVERIES.labels("retrying").inc()
        log.info(
            "webhook.retrying delivery_id=%s webhook_id=%s attempt=%d in_seconds=%g error=%r",
            row.id,
            row.message_id,
            row.attempts,
            delay,
            outcome.error,
        )


async def _read_some(response: httpx.Response) -> str:
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= RESPONSE_KEPT:
            break
    text = kept[:RESPONSE_KEPT].decode(errors="replace")
    # Stored and logged: no NUL (PostgreSQL text refuses it), no line breaks to forge log lines.
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None
