"""credit ledger: a row per charge, refund and adjustment

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_entries",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("generation_id", sa.String(length=36), nullable=True),
        sa.Column("run", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_credit_entries_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_entries")),
    )
    op.create_index(
        op.f("ix_credit_entries_project_id"), "credit_entries", ["project_id"], unique=False
    )
    op.create_index("ix_credit_entries_run", "credit_entries", ["generation_id", "run"])


def downgrade() -> None:
    op.drop_index("ix_credit_entries_run", table_name="credit_entries")
    op.drop_index(op.f("ix_credit_entries_project_id"), table_name="credit_entries")
    op.drop_table("credit_entries")
