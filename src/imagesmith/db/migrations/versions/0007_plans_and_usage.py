"""plans, quota overrides and monthly usage counters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("plan", sa.String(length=16), nullable=False, server_default="unlimited")
        )
        batch.add_column(sa.Column("monthly_quota", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("concurrent_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("end_user_monthly_quota", sa.Integer(), nullable=True))
    op.create_table(
        "usage_counters",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("end_user_id", sa.String(length=36), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_usage_counters_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_counters")),
        sa.UniqueConstraint(
            "project_id", "end_user_id", "month", name=op.f("uq_usage_counters_project_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("end_user_monthly_quota")
        batch.drop_column("concurrent_limit")
        batch.drop_column("monthly_quota")
        batch.drop_column("plan")
