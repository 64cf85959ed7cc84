"""model trust: the admin allow-list of models whose own code may run (trust_remote_code)

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_trust",
        sa.Column("model_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("granted_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("granted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )


def downgrade() -> None:
    op.drop_table("model_trust")
