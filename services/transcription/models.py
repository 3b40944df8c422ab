"""Transcription's own tables: one job per note run (with its transcript) and the messaging tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.outbox import messaging_tables
from common.tombstones import tombstone_table


class Base(DeclarativeBase):
    metadata = MetaData()


class JobRow(Base):
    """A run of a note to transcribe: queued -> running -> completed | failed."""

    __tablename__ = "transcription_jobs"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    note_id: Mapped[str] = mapped_column(String(36), nullable=False)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    blob_key: Mapped[str] = mapped_column(String(512), nullable=False)
    audio_duration_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    language_hint: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    # types.RequestKind of the upload, echoed in TranscriptionCompleted so notegen can skip
    # transcription-only requests.
    kind: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    tries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    language: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    duration_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    segments: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    failure_code: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_message: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    # W3C trace context of the event that queued the job: the worker's spans continue its trace.
    trace_context: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_jobs_note", "note_id"),
        Index("ix_jobs_claim", "status", "created_at"),
    )


MESSAGING = messaging_tables(Base.metadata)
# Notes deleted: their jobs are gone and their later AudioIngested / TranscriptionRequested ignored.
DELETED_NOTES = tombstone_table(Base.metadata)
