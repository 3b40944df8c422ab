"""stable section ids, section versions and clinicians' edits

Revision ID: 0002
Revises: 0001

``sections`` gains ``section_id`` (the public id, stable across a note's generations) and
``version``; existing rows are backfilled with uuid5(namespace, "<note_id>:<label>") and versions
1, 2, ... per section id in generation order (attempt, then creation time); a note generated once,
the only case before retries existed, gets version 1 everywhere. ``section_edits`` holds edits.
"""

import uuid
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from common.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A copy of services.notegen.models.SECTION_ID_NAMESPACE as of this revision (must never change).
SECTION_ID_NAMESPACE = uuid.UUID("d1e15953-809d-4ba0-8032-b82fe48aff49")


def _backfill() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    generations = sa.Table(
        "generations", meta, sa.Column("run_id", sa.String(36)), sa.Column("attempt", sa.Integer),
        sa.Column("created_at", UTCDateTime),
    )
    sections = sa.Table(
        "sections", meta, sa.Column("id", sa.String(36)), sa.Column("run_id", sa.String(36)),
        sa.Column("note_id", sa.String(36)), sa.Column("label", sa.String(64)),
        sa.Column("section_id", sa.String(36)), sa.Column("version", sa.Integer),
    )
    rows = bind.execute(
        sa.select(sections.c.id, sections.c.note_id, sections.c.label)
        .select_from(sections.join(generations, sections.c.run_id == generations.c.run_id))
        .order_by(generations.c.attempt, generations.c.created_at, sections.c.id)
    ).all()
    versions: dict[str, int] = defaultdict(int)
    updates = []
    for row in rows:
        section_id = str(uuid.uuid5(SECTION_ID_NAMESPACE, f"{row.note_id}:{row.label}"))
        versions[section_id] += 1
        updates.append({"row_id": row.id, "new_section_id": section_id, "new_version": versions[section_id]})
    if updates:
        bind.execute(
            sections.update()
            .where(sections.c.id == sa.bindparam("row_id"))
            .values(section_id=sa.bindparam("new_section_id"), version=sa.bindparam("new_version")),
            updates,
        )


def upgrade() -> None:
    op.add_column("sections", sa.Column("section_id", sa.String(36), nullable=True))
    op.add_column("sections", sa.Column("version", sa.Integer, nullable=False, server_default="1"))
    _backfill()
    # SQLite cannot alter a column in place: batch mode copies the table (indexes included).
    with op.batch_alter_table("sections") as batch:
        batch.alter_column("section_id", existing_type=sa.String(36), nullable=False)
        batch.alter_column("version", existing_type=sa.Integer, existing_nullable=False, server_default=None)
    op.create_index("ix_sections_section", "sections", ["section_id"])
    op.create_table(
        "section_edits",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("section_id", sa.String(36), nullable=False),
        sa.Column("note_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("section_id", "version", name="uq_section_edits_version"),
    )
    op.create_index("ix_section_edits_note", "section_edits", ["note_id"])


def downgrade() -> None:
    op.drop_index("ix_section_edits_note", table_name="section_edits")
    op.drop_table("section_edits")
    op.drop_index("ix_sections_section", table_name="sections")
    with op.batch_alter_table("sections") as batch:
        batch.drop_column("version")
        batch.drop_column("section_id")
