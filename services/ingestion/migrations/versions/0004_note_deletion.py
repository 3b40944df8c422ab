"""note deletion: tombstone columns of an upload

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("deleted_at", UTCDateTime, nullable=True))
    op.add_column(
        "uploads", sa.Column("blob_pending_delete", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("uploads", sa.Column("blob_delete_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_uploads_blob_pending", "uploads", ["blob_pending_delete"])


def downgrade() -> None:
    op.drop_index("ix_uploads_blob_pending", "uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("blob_delete_attempts")
        batch.drop_column("blob_pending_delete")
        batch.drop_column("deleted_at")
