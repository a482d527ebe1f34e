"""Writing deliveries: inside the transaction that changes a generation's status, so the event
and the change commit together (or neither does). The caller wakes the sender after commit
(`notifier.webhooks_queued()`) when anything was written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.config import Settings
from imagesmith.db.base import new_id, utcnow
from imagesmith.image.links import iso
from imagesmith.models import DeliveryStatus, Generation, WebhookDelivery
from imagesmith.webhooks.events import PROGRESS, wants
from imagesmith.webhooks.repository import WebhookRepository

Target = tuple[str | None, str]  # (endpoint id, or None for the generation's own URL; URL)


async def targets_for(
    session: AsyncSession, generation: Generation, event_type: str
) -> list[Target]:
    """Who wants this event: the generation's own webhookUrl, then the project's enabled
    endpoints that subscribe to it."""
    found: list[Target] = []
    if generation.webhook_url and wants(generation.webhook_events, event_type):
        found.append((None, generation.webhook_url))
    # Read once per project and transaction: a batch's events (16 jobs of one project, say)
    # ask the same question, and nothing that announces also edits endpoints.
    known = session.info.setdefault("enabled_webhook_endpoints", {})
    if generation.project_id not in known:
        known[generation.project_id] = await WebhookRepository(session).endpoints(
            generation.project_id, enabled_only=True
        )
    for endpoint in known[generation.project_id]:
        if wants(endpoint.events, event_type):
            found.append((endpoint.id, endpoint.url))
    return found


async def record_event(
    settings: Settings,
    session: AsyncSession,
    generation: Generation,
    event_type: str,
    data: Callable[[], Awaitable[dict[str, Any]]],
) -> bool:
    """One delivery per target of this event, all with one `webhook-id` and one body
    `{type, timestamp, data}` (`data()` is asked only when someone wants the event); True when
    any was written."""
    targets = await targets_for(session, generation, event_type)
    if not targets:
        return False
    repo = WebhookRepository(session)
    await repo.ensure_secret(generation.project_id)  # the sender only reads it
    now = utcnow()
    payload = json.dumps(
        {"type": event_type, "timestamp": iso(now), "data": await data()}, separators=(",", ":")
    )
    message_id = "msg_" + uuid.uuid4().hex
    # Progress is stale by the next one: a single attempt. Every other event gets the schedule.
    attempts = 1 if event_type == PROGRESS else 1 + len(settings.resolved_retry_delays)
    for endpoint_id, url in targets:
        repo.add(
            WebhookDelivery(
                id=new_id(),
                project_id=generation.project_id,
                message_id=message_id,
                generation_id=generation.id,
                endpoint_id=endpoint_id,
                url=url,
                event_type=event_type,
                payload=payload,
                status=DeliveryStatus.PENDING,
                attempts=0,
                max_attempts=attempts,
                next_attempt_at=now,
                attempt_log=[],
                created_at=now,
            )
        )
    return True
