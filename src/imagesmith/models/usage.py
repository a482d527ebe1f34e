"""Usage counters: generations created per project (and per end user) per calendar month."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin


class UsageCounter(IdMixin, Base):
    __tablename__ = "usage_counters"
    __table_args__ = (UniqueConstraint("project_id", "end_user_id", "month"),)

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    end_user_id: Mapped[str] = mapped_column(String(36), default="")  # "": the whole project
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM, UTC
    count: Mapped[int] = mapped_column(Integer, default=0)
