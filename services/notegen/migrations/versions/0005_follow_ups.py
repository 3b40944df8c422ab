"""Smart Feedback: follow-up batches and the follow-up message of each note

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "follow_up_batches",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("requested_count", sa.Integer(), nullable=False),
        sa.Column("queued_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "follow_ups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("batch_id", sa.String(36), sa.ForeignKey("follow_up_batches.batch_id"), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("note_id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column("failure_message", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_follow_ups_batch", "follow_ups", ["batch_id"])
    op.create_index("ix_follow_ups_note", "follow_ups", ["note_id", "created_at"])
    op.create_index("ix_follow_ups_due", "follow_ups", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("follow_ups")
    op.drop_table("follow_up_batches")
