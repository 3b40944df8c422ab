"""tombstones of deleted notes

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from common.tombstones import TABLE_NAME, create_tombstone_table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tombstone_table(op)


def downgrade() -> None:
    op.drop_table(TABLE_NAME)
