"""Organizations own projects; a project is the tenant every record is scoped to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class Organization(IdMixin, TimestampMixin, Base):
    __tablename__ = "organizations"

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))


class Project(IdMixin, TimestampMixin, Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("organization_id", "slug"),)

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    # None means unlimited; the credits feature (Stablecog dialect) sets a number.
    credit_balance: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # Live URLs generate for strangers, so they are off until an operator turns them on; then
    # anonymous requests may start only the scopes listed here (key holders create others).
    live_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    live_open_scopes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # Plan and limits (limits/quotas.py): None overrides mean "the plan's value".
    plan: Mapped[str] = mapped_column(String(16), default="unlimited", server_default="unlimited")
    monthly_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    end_user_monthly_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # devkit4ai's anonymous generation: off until enabled, then limited per client IP per day.
    anonymous_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    anonymous_daily_limit: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    # Webhook signing (Standard Webhooks `whsec_…`), made on first use. After a rotation the
    # previous secret also signs until webhook_previous_until.
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
