"""tombstones of deleted notes

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from common.tombstones import TABLE_NAME, create_tombstone_table

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tombstone_table(op)


def downgrade() -> None:
    op.drop_table(TABLE_NAME)
