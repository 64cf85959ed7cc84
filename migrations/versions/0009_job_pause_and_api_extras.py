"""job.pause_requested and job.api_extras: pausing a job at a checkpoint, and what an OpenAI client gave

Existing jobs were never asked to pause and carry no extras.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job", sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("job", sa.Column("api_extras", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("api_extras")
        batch.drop_column("pause_requested")
