"""regenerations: the transcript kept on generations, revisions of generations and sections

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("transcript", sa.JSON(), nullable=True))
    op.add_column("generations", sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("sections", sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sections") as batch:
        batch.drop_column("revision")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("revision")
        batch.drop_column("transcript")
