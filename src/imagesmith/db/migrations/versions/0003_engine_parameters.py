"""engine parameters: outputs, img2img, credits, dialect

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("num_outputs", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(sa.Column("init_image_key", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("init_image_ref", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("prompt_strength", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("credits_charged", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("dialect", sa.String(length=16), nullable=False, server_default="native")
        )
        batch_op.add_column(
            sa.Column("output_image_ids", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        for column in (
            "output_image_ids",
            "dialect",
            "credits_charged",
            "prompt_strength",
            "init_image_ref",
            "init_image_key",
            "num_outputs",
        ):
            batch_op.drop_column(column)
