"""Live URLs: scopes that allow generation from a GET, and the cache that makes repeats free."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class LiveScope(IdMixin, TimestampMixin, Base):
    __tablename__ = "live_scopes"
    __table_args__ = (UniqueConstraint("project_id", "slug"),)

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64))
    allow_new_generations: Mapped[bool] = mapped_column(Boolean, default=True)
    new_generations_limit: Mapped[int] = mapped_column(Integer, default=30)
    current_generations: Mapped[int] = mapped_column(Integer, default=0)
    last_generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PromptCacheEntry(IdMixin, TimestampMixin, Base):
    __tablename__ = "prompt_cache"
    __table_args__ = (UniqueConstraint("project_id", "cache_key"),)

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    scope_id: Mapped[str] = mapped_column(ForeignKey("live_scopes.id", ondelete="CASCADE"))
    cache_key: Mapped[str] = mapped_column(String(64))
    generation_id: Mapped[str] = mapped_column(String(36))
    hit_count: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
