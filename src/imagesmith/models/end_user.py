"""End users: the people who use a developer's app, registered per project (devkit4ai)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class EndUser(IdMixin, TimestampMixin, Base):
    __tablename__ = "end_users"
    __table_args__ = (UniqueConstraint("project_id", "email"),)

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))  # Argon2id
    full_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RefreshToken(Base):
    """One issued refresh token (its JWT id): used once, then replaced; a reuse is refused."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    end_user_id: Mapped[str] = mapped_column(
        ForeignKey("end_users.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
