"""structured facts on generations, sentence provenance on sections

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("structured", sa.JSON(), nullable=True))
    op.add_column("sections", sa.Column("sentences", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sections") as batch:
        batch.drop_column("sentences")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("structured")
