"""per-key rate limits on api_keys

Revision ID: 0002
Revises: 0001

Two nullable integer columns; NULL means the deployment's default limits. A plain ADD COLUMN of a
nullable column needs no table rebuild on SQLite.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("rate_limit_per_hour", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit_per_hour")
        batch.drop_column("rate_limit_per_minute")
