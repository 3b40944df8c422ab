"""Query's own tables: notes (the read model, one row per note), tombstones of deleted notes and
the messaging tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.outbox import messaging_tables
from common.tombstones import tombstone_table


class Base(DeclarativeBase):
    metadata = MetaData()


class NoteRow(Base):
    __tablename__ = "notes"

    note_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(255), default="")
    # The name lowercased with accents stripped: what case- and accent-insensitive search matches.
    name_search: Mapped[str] = mapped_column(Text, default="")
    gender: Mapped[str] = mapped_column(String(64), default="")
    external_id: Mapped[str] = mapped_column(String(255), default="")
    metadata_items: Mapped[list] = mapped_column(JSON, default=list)
    language_hint: Mapped[str] = mapped_column(String(16), default="")
    # Provisional (the first event's time) until AudioIngested brings the upload's creation time.
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    run_id: Mapped[str] = mapped_column(String(64), default="")
    run_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The run the row shows; events of older runs are ignored, a newer one resets the row's run.
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # How far the run got (see handlers.STAGE_*): status only moves to a higher stage.
    stage: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    language: Mapped[str] = mapped_column(String(16), default="")
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    transcript: Mapped[list | None] = mapped_column(JSON, nullable=True)
    sections: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # The structured facts of the note (patient, vitals, medications, ...), with provenance.
    structured: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The revision of the run's note the sections show (regenerations raise it).
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    generator: Mapped[str] = mapped_column(String(64), default="")
    failure_code: Mapped[str] = mapped_column(String(64), default="")
    failure_message: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (
        Index("ix_notes_tenant_created", "tenant_id", "created_at", "note_id"),
        Index("ix_notes_tenant_status", "tenant_id", "status", "created_at"),
        Index("ix_notes_tenant_external", "tenant_id", "external_id"),
    )


MESSAGING = messaging_tables(Base.metadata)
DELETED_NOTES = tombstone_table(Base.metadata)
