"""Webhooks: a project's endpoints, and the outbox of deliveries (one row per message and
target, written in the transaction that changed the generation)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    __tablename__ = "webhook_endpoints"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    # Event types this endpoint receives (webhooks/events.py); never empty.
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at (again, after a failed attempt)
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # the retry schedule ran out, a 410, or the endpoint was disabled


class WebhookDelivery(IdMixin, Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_generation", "generation_id"),
        Index("ix_webhook_deliveries_finished", "status", "created_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # The `webhook-id` header: the same on every attempt (receivers de-duplicate on it).
    message_id: Mapped[str] = mapped_column(String(64))
    generation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # None: the generation's own webhookUrl.
    endpoint_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(64))
    # The body as first written; every attempt sends these bytes.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(
            DeliveryStatus,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=DeliveryStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts allowed in all: 1 + the retry schedule's length when the row was written.
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A sender holds the row until then (a sender that dies mid-attempt loses it after this).
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The latest attempts, newest last: [{"at", "statusCode", "error", "durationMs"}].
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
