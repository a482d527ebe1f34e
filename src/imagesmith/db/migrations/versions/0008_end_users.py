"""end users with refresh tokens; generations know their end user, visibility, instructions;
anonymous generation per project

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "end_users",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_end_users_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_end_users")),
        sa.UniqueConstraint("project_id", "email", name=op.f("uq_end_users_project_id")),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("end_user_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["end_user_id"],
            ["end_users.id"],
            name=op.f("fk_refresh_tokens_end_user_id_end_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
    )
    op.create_index(
        op.f("ix_refresh_tokens_end_user_id"), "refresh_tokens", ["end_user_id"], unique=False
    )
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("end_user_id", sa.String(length=36), nullable=True))
        batch.add_column(
            sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("instructions", sa.Text(), nullable=True))
        batch.create_index(op.f("ix_generations_end_user_id"), ["end_user_id"], unique=False)
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("anonymous_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("anonymous_daily_limit", sa.Integer(), nullable=False, server_default="10")
        )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("anonymous_daily_limit")
        batch.drop_column("anonymous_enabled")
    with op.batch_alter_table("generations") as batch:
        batch.drop_index(op.f("ix_generations_end_user_id"))
        batch.drop_column("instructions")
        batch.drop_column("is_public")
        batch.drop_column("end_user_id")
    op.drop_index(op.f("ix_refresh_tokens_end_user_id"), table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_table("end_users")
