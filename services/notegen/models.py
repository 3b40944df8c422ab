"""Note generation's own tables: generation runs, the sections they wrote, and messaging tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.outbox import messaging_tables


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

    __table_args__ = (Index("ix_generations_note", "note_id"),)


class SectionRow(Base):
    """A section as generated; later edits are new versions of the same section id."""

    __tablename__ = "sections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("generations.run_id"), nullable=False)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    label: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    source_segments: Mapped[list] = mapped_column(JSON, nullable=False, default=list)

    __table_args__ = (Index("ix_sections_run", "run_id", "position"),)


MESSAGING = messaging_tables(Base.metadata)
