"""request kind (note / transcription only), client idempotency key, callback URL

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("kind", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("uploads", sa.Column("client_request_id", sa.String(128), nullable=True))
    op.add_column("uploads", sa.Column("request_hash", sa.String(64), nullable=False, server_default=""))
    op.add_column("uploads", sa.Column("callback_url", sa.String(2048), nullable=False, server_default=""))
    op.create_index("ux_uploads_client_request", "uploads", ["tenant_id", "client_request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_uploads_client_request", "uploads")
    with op.batch_alter_table("uploads") as batch:
        for column in ("callback_url", "request_hash", "client_request_id", "kind"):
            batch.drop_column(column)
