"""Flows group chained generations and hold flow-scoped aliases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin


class Flow(IdMixin, TimestampMixin, Base):
    __tablename__ = "flows"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    aliases: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
