"""job: resume flag for retries, the plan a job was launched with

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite does it in place, so rows in job_event keep their foreign key.
    op.add_column("job", sa.Column("resume", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("job", sa.Column("plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("plan")
        batch_op.drop_column("resume")
