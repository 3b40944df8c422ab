"""notes read model and messaging tables

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
        "notes",
        sa.Column("note_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("name_search", sa.Text, nullable=False),
        sa.Column("gender", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("metadata_items", sa.JSON, nullable=False),
        sa.Column("language_hint", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("run_requested_at", UTCDateTime, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("transcript", sa.JSON, nullable=True),
        sa.Column("sections", sa.JSON, nullable=True),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column("failure_message", sa.Text, nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
    )
    op.create_index("ix_notes_tenant_created", "notes", ["tenant_id", "created_at", "note_id"])
    op.create_index("ix_notes_tenant_status", "notes", ["tenant_id", "status", "created_at"])
    op.create_index("ix_notes_tenant_external", "notes", ["tenant_id", "external_id"])
    create_messaging_tables(op)


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")
    op.drop_table("notes")
