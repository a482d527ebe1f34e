"""Webhook endpoints, delivery logs and signing secrets, scoped to one project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from imagesmith.db.base import new_id, storable_text, utcnow
from imagesmith.errors import GenerationNotFound, NotFound, ValidationFailed
from imagesmith.image.fetch import allow_all, is_public, pinned_target, resolver_for
from imagesmith.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from imagesmith.runtime import Runtime
from imagesmith.webhooks.events import DEFAULT_EVENTS, InvalidWebhook, parse_events
from imagesmith.webhooks.repository import WebhookRepository

MAX_URL = 2048


class EndpointNotFound(NotFound):
    code = "WEBHOOK_NOT_FOUND"


class DeliveryNotFound(NotFound):
    code = "WEBHOOK_DELIVERY_NOT_FOUND"


@dataclass(frozen=True)
class EndpointChange:
    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


async def check_target(runtime: Runtime, project_id: str, url: str, field: str = "url") -> str:
    """A URL `project_id`'s deliveries may go to: http(s), at most 2048 characters, resolving
    to public addresses only (unless private URLs are allowed). Checked again at every
    attempt."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidWebhook(f"{field}: a webhook URL is required")
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidWebhook(f"{field}: the URL is over {MAX_URL} characters")
    storable_text(url, field)
    policy = allow_all if runtime.settings.allow_private_urls else is_public
    try:
        await pinned_target(
            url, resolver_for(project_id), policy, what=f"{field}", error=InvalidWebhook
        )
    except InvalidWebhook as exc:
        raise InvalidWebhook(exc.message) from None
    return url


class WebhookService:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    # Endpoints ----------------------------------------------------------------------------

    async def create(
        self,
        project_id: str,
        url: str,
        events: list[str] | None,
        description: str | None,
        enabled: bool = True,
    ) -> WebhookEndpoint:
        url = await check_target(self.rt, project_id, url)
        wanted = parse_events(events) or list(DEFAULT_EVENTS)
        storable_text(description, "description")
        limit = self.rt.settings.webhook_max_endpoints
        async with self.rt.db.transaction() as session:
            repo = WebhookRepository(session)
            await repo.lock_project(project_id)
            if await repo.count_endpoints(project_id) >= limit:
                raise ValidationFailed(
                    f"This project has {limit} webhook endpoints, the most it may have; "
                    "delete one first",
                    code="WEBHOOK_LIMIT_REACHED",
                )
            endpoint = WebhookEndpoint(
                id=new_id(),
                project_id=project_id,
                url=url,
                events=wanted,
                description=description,
                enabled=enabled,
            )
            session.add(endpoint)
        return endpoint

    async def endpoints(self, project_id: str) -> list[WebhookEndpoint]:
        async with self.rt.db.read() as session:
            return await WebhookRepository(session).endpoints(project_id)

    async def get(self, project_id: str, endpoint_id: str) -> WebhookEndpoint:
        async with self.rt.db.read() as session:
            endpoint = await WebhookRepository(session).endpoint(project_id, endpoint_id)
        if endpoint is None:
            raise EndpointNotFound(f"No webhook endpoint '{endpoint_id[:64]}' in this project")
        return endpoint

    async def update(
        self, project_id: str, endpoint_id: str, change: EndpointChange
    ) -> WebhookEndpoint:
        url = (
            await check_target(self.rt, project_id, change.url) if change.url is not None else None
        )
        events = parse_events(change.events)
        storable_text(change.description, "description")
        async with self.rt.db.transaction() as session:
            endpoint = await WebhookRepository(session).endpoint(project_id, endpoint_id)
            if endpoint is None:
                raise EndpointNotFound(f"No webhook endpoint '{endpoint_id[:64]}' in this project")
            if url is not None:
                endpoint.url = url
            if events is not None:
                endpoint.events = events
            if change.description is not None:
                endpoint.description = change.description
            if change.enabled is not None:
                endpoint.enabled = change.enabled
                endpoint.disabled_reason = None if change.enabled else "Disabled by request"
            endpoint.updated_at = utcnow()
        return endpoint

    async def delete(self, project_id: str, endpoint_id: str) -> None:
        async with self.rt.db.transaction() as session:
            repo = WebhookRepository(session)
            endpoint = await repo.endpoint(project_id, endpoint_id)
            if endpoint is None:
                raise EndpointNotFound(f"No webhook endpoint '{endpoint_id[:64]}' in this project")
            await repo.fail_pending_for_endpoint(endpoint.id, "the endpoint was deleted")
            await session.delete(endpoint)

    # Deliveries ---------------------------------------------------------------------------

    async def endpoint_deliveries(
        self, project_id: str, endpoint_id: str, limit: int, offset: int
    ) -> tuple[list[WebhookDelivery], int]:
        await self.get(project_id, endpoint_id)
        async with self.rt.db.read() as session:
            return await WebhookRepository(session).deliveries(
                project_id, endpoint_id=endpoint_id, limit=limit, offset=offset
            )

    async def generation_deliveries(
        self, project_id: str, generation_id: str, limit: int, offset: int
    ) -> tuple[list[WebhookDelivery], int]:
        async with self.rt.db.read() as session:
            repo = WebhookRepository(session)
            if not await repo.generation_exists(project_id, generation_id):
                raise GenerationNotFound(generation_id)
            return await repo.deliveries(
                project_id, generation_id=generation_id, limit=limit, offset=offset
            )

    async def redeliver(self, project_id: str, delivery_id: str) -> WebhookDelivery:
        """Send a finished delivery again now, with the same webhook-id and body (one more
        attempt; a pending one is just moved up)."""
        async with self.rt.db.transaction() as session:
            delivery = await WebhookRepository(session).delivery(project_id, delivery_id)
            if delivery is None:
                raise DeliveryNotFound(f"No webhook delivery '{delivery_id[:64]}' in this project")
            now = utcnow()
            if delivery.status is not DeliveryStatus.PENDING:
                delivery.max_attempts = delivery.attempts + 1
            delivery.status = DeliveryStatus.PENDING
            delivery.next_attempt_at = now
            if delivery.locked_until is not None and delivery.locked_until < now:
                delivery.locked_until = None  # a live sender's hold stays: no second copy now
        self.rt.notifier.webhooks_queued()
        return delivery

    async def waiting(self) -> int:
        """Deliveries of every project not yet delivered nor given up."""
        async with self.rt.db.read() as session:
            return await WebhookRepository(session).pending_count()

    # Secrets ------------------------------------------------------------------------------

    async def secret(self, project_id: str, *, rotate: bool = False) -> tuple[str, list[str]]:
        """(the current secret, every secret that signs now); `rotate` makes a new one and
        keeps the old one signing for the overlap."""
        now = utcnow()
        overlap = timedelta(hours=self.rt.settings.webhook_secret_overlap_hours)
        async with self.rt.db.transaction() as session:
            repo = WebhookRepository(session)
            await repo.ensure_secret(project_id)
            if rotate:
                await repo.rotate_secret(project_id, now, overlap)
            signing = await repo.signing_secrets(project_id, now)
        return signing[0], signing
