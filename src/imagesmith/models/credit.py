"""The credit ledger: one row per charge, refund or adjustment, so a balance can be explained.

A charge and its refund name the generation and the run (its job version) they belong to: a run
is paid once when it is queued and refunded at most once, when it ends without delivering."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imagesmith.db.base import Base, IdMixin, UTCDateTime, utcnow


class CreditKind(enum.StrEnum):
    CHARGE = "charge"  # a run was queued
    REFUND = "refund"  # the run ended without delivering (failed, cancelled, superseded, deleted)
    ADJUST = "adjust"  # an operator set the balance (amount = new - old)


class CreditEntry(IdMixin, Base):
    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_run", "generation_id", "run"),)

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # No foreign key: the ledger outlives a deleted generation.
    generation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    run: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[CreditKind] = mapped_column(
        Enum(
            CreditKind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
        )
    )
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
