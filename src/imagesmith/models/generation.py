"""The generations row is the job: request parameters, status, lease and result."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.catalog.params import EngineParams
from imagesmith.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class GenerationStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (
            GenerationStatus.SUCCESS,
            GenerationStatus.FAILED,
            GenerationStatus.CANCELLED,
        )


class Generation(IdMixin, TimestampMixin, Base):
    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        Index("ix_generations_queue", "status", "created_at"),
        Index("ix_generations_project_created", "project_id", "created_at"),
    )

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    flow_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)

    # What was asked for.
    prompt: Mapped[str] = mapped_column(Text)
    original_prompt: Mapped[str] = mapped_column(Text)
    auto_enhance: Mapped[bool] = mapped_column(Boolean, default=True)
    enhancement_template: Mapped[str | None] = mapped_column(String(32), nullable=True)
    enhanced_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    aspect_ratio: Mapped[str | None] = mapped_column(String(8), nullable=True)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[str] = mapped_column(String(128))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance_scale: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str | None] = mapped_column(String(32), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    seed_requested: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reference_images: Mapped[list[str]] = mapped_column(JSON, default=list)
    num_outputs: Mapped[int] = mapped_column(Integer, default=1)
    init_image_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    init_image_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    credits_charged: Mapped[int] = mapped_column(Integer, default=0)
    dialect: Mapped[str] = mapped_column(String(16), default="native")
    alias: Mapped[str | None] = mapped_column(String(128), nullable=True)
    flow_alias: Mapped[str | None] = mapped_column(String(128), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # The job.
    status: Mapped[GenerationStatus] = mapped_column(
        Enum(
            GenerationStatus,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=GenerationStatus.PENDING,
    )
    job_version: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    progress_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Partial images asked for, and how many of this run's are stored (preview_key(…, index)).
    previews: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    previews_ready: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # The result.
    output_image_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    output_image_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    processing_time_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # Who asked, for apps whose end users generate (devkit4ai), and what they sent.
    end_user_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)

    # This generation's own webhook (besides the project's endpoints): where, and which events
    # (None: the default set, webhooks/events.py).
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)

    @property
    def params(self) -> EngineParams:
        """The engine parameters, read off the columns of the same names."""
        return EngineParams.of(self)

    def set_params(self, params: EngineParams) -> None:
        for name, value in params.as_dict().items():
            setattr(self, name, value)

    def output_ids(self) -> list[str]:
        """Every output image id, in order (rows from before several outputs hold one)."""
        ids = list(self.output_image_ids or [])
        if not ids and self.output_image_id:
            ids = [self.output_image_id]
        return ids

    def reference_ids(self) -> list[str]:
        return [i for i in (ref_image_id(r) for r in self.reference_images or []) if i]


def ref_image_id(ref: Any) -> str | None:
    """Reference entries are {"imageId", "alias"} (older rows may hold a bare string)."""
    if isinstance(ref, dict):
        value = ref.get("imageId")
        return str(value) if value else None
    return str(ref) if ref else None
