"""Note generation's own tables: generation runs, the sections they wrote, clinicians' edits, messaging."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.outbox import messaging_tables
from common.tombstones import tombstone_table

# Never change: a section's public id is derived from it (migration 0002 holds a copy for its backfill).
SECTION_ID_NAMESPACE = uuid.UUID("d1e15953-809d-4ba0-8032-b82fe48aff49")


def section_uuid(note_id: str, label: str) -> str:
    """The public id of a note's section with ``label``: the same in every generation of the note."""
    return str(uuid.uuid5(SECTION_ID_NAMESPACE, f"{note_id}:{label}"))


class Base(DeclarativeBase):
    metadata = MetaData()


class GenerationRow(Base):
    """One generation of a note's sections, for one run of the note (completed or failed)."""

    __tablename__ = "generations"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    generator: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_code: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_message: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # The structured facts beside the prose (StructuredData.to_dict()), with their provenance.
    structured: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The transcript the note was written from (a Transcript as JSON), for regenerations.
    transcript: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # 0 for the run's first note, +1 per regeneration; the current sections are this revision's.
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    __table_args__ = (Index("ix_generations_note", "note_id"),)


class SectionRow(Base):
    """A section as one generation wrote it (``id`` is this row's own, internal).

    ``section_id`` is the public id, stable across the note's generations; ``version`` orders this
    row among every generated row and edit of that section id.
    """

    __tablename__ = "sections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("generations.run_id"), nullable=False)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    section_id: Mapped[str] = mapped_column(String(36), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    label: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    source_segments: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    # Each sentence of the content with its provenance: [{text, source_segments, start_ms, end_ms}].
    sentences: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # The generation revision that wrote this row (see GenerationRow.revision).
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    __table_args__ = (
        Index("ix_sections_run", "run_id", "position"),
        Index("ix_sections_section", "section_id"),
    )


class SectionEditRow(Base):
    """A clinician's edit of a section: a new version of it, current over any later generation."""

    __tablename__ = "section_edits"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    section_id: Mapped[str] = mapped_column(String(36), nullable=False)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("section_id", "version", name="uq_section_edits_version"),
        Index("ix_section_edits_note", "note_id"),
    )


class FollowUpBatchRow(Base):
    """One Smart Feedback request (seed 003): how many ids it named and how many were queued."""

    __tablename__ = "follow_up_batches"

    batch_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    requested_count: Mapped[int] = mapped_column(Integer, nullable=False)
    queued_count: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class FollowUpRow(Base):
    """A follow-up message to write for one note of a batch: pending -> completed | failed."""

    __tablename__ = "follow_ups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("follow_up_batches.batch_id"), nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    # The generation the message resumes from (the note's latest completed run).
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    instructions: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    language: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    generator: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_code: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_follow_ups_batch", "batch_id"),
        Index("ix_follow_ups_note", "note_id", "created_at"),
        Index("ix_follow_ups_due", "status", "created_at"),
    )


MESSAGING = messaging_tables(Base.metadata)
# Notes deleted: their generations, sections and edits are gone, their later transcripts ignored.
DELETED_NOTES = tombstone_table(Base.metadata)
