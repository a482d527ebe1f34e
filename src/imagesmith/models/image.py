"""Images: generated outputs and uploads, stored in the object store under `storage_key`."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class ImageSource(enum.StrEnum):
    GENERATED = "generated"
    UPLOADED = "uploaded"


class Image(IdMixin, TimestampMixin, Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project_id", "alias"),)

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    generation_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    flow_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    storage_key: Mapped[str] = mapped_column(String(512))
    mime_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    file_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[ImageSource] = mapped_column(
        Enum(
            ImageSource,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    alias: Mapped[str | None] = mapped_column(String(128), nullable=True)
    focal_point: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
