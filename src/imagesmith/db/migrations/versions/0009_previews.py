"""partial images: how many a generation asks for, and how many of its run are stored

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("previews", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("previews_ready", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("previews_ready")
        batch.drop_column("previews")
