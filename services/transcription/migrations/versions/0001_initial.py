"""transcription jobs and messaging tables

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
        "transcription_jobs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("note_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("audio_duration_ms", sa.BigInteger, nullable=False),
        sa.Column("language_hint", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("segments", sa.JSON, nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column("failure_message", sa.String(1000), nullable=False),
    )
    op.create_index("ix_jobs_note", "transcription_jobs", ["note_id"])
    op.create_index("ix_jobs_claim", "transcription_jobs", ["status", "created_at"])
    create_messaging_tables(op)


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")
    op.drop_table("transcription_jobs")
