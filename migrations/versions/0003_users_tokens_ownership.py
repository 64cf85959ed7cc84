"""users, API tokens, and an owner on jobs and datasets

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_user_email", "user", ["email"], unique=True)
    op.create_table(
        "api_token",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("prefix", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_token_user_id", "api_token", ["user_id"])
    op.create_index("ix_api_token_token_hash", "api_token", ["token_hash"], unique=True)
    # Plain ADD COLUMN keeps existing rows (and their foreign keys) in place on SQLite.
    op.add_column("job", sa.Column("owner_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_index("ix_job_owner_id", "job", ["owner_id"])
    op.add_column("dataset", sa.Column("owner_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_index("ix_dataset_owner_id", "dataset", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_dataset_owner_id", "dataset")
    with op.batch_alter_table("dataset") as batch_op:
        batch_op.drop_column("owner_id")
    op.drop_index("ix_job_owner_id", "job")
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("owner_id")
    op.drop_index("ix_api_token_token_hash", "api_token")
    op.drop_index("ix_api_token_user_id", "api_token")
    op.drop_table("api_token")
    op.drop_index("ix_user_email", "user")
    op.drop_table("user")
