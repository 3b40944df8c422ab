"""uploads and messaging tables

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime
from common.outbox import create_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("note_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("gender", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("metadata_items", sa.JSON, nullable=False),
        sa.Column("language_hint", sa.String(16), nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("run_requested_at", UTCDateTime, nullable=False),
        sa.Column("last_driven_at", UTCDateTime, nullable=False),
        sa.Column("drive_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_uploads_tenant", "uploads", ["tenant_id", "created_at"])
    op.create_index("ix_uploads_open", "uploads", ["status", "last_driven_at"])
    create_messaging_tables(op)


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")
    op.drop_table("uploads")
