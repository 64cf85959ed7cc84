"""catalog_gpu.calibration: a GPU's overhead and utilisation as calibrated from its measured runs

Existing rows get {} (not calibrated): the planner keeps their seeded figures.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("catalog_gpu", sa.Column("calibration", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("catalog_gpu") as batch:
        batch.drop_column("calibration")
