"""Ingestion's own tables: uploads (one per note) and the messaging tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, MetaData, String, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.outbox import messaging_tables


class Base(DeclarativeBase):
    metadata = MetaData()


class UploadRow(Base):
    __tablename__ = "uploads"

    note_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(255), default="")
    gender: Mapped[str] = mapped_column(String(32), default="")
    external_id: Mapped[str] = mapped_column(String(255), default="")
    metadata_items: Mapped[list] = mapped_column(JSON, default=list)
    language_hint: Mapped[str] = mapped_column(String(16), default="")
    blob_key: Mapped[str] = mapped_column(String(512), nullable=False)
    content_type: Mapped[str] = mapped_column(String(128), default="")
    filename: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    duration_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # pending until a terminal event of the current run arrives, then completed or failed;
    # deleted: a tombstone (personal fields emptied) kept so the note's late events are ignored.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    run_requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # When the run was last (re-)published; for a deleted note, the last try to remove its audio.
    last_driven_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    drive_count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # types.RequestKind: 0 a note, 1 a transcript only (seed 002).
    kind: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # The client's idempotency key (NULL when none, so that the unique index ignores those rows),
    # and the hash of what the request asked for (audio and parameters) to tell a replay from a
    # conflicting reuse of the key.
    client_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False, default="", server_default="")
    callback_url: Mapped[str] = mapped_column(String(2048), nullable=False, default="", server_default="")
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A deleted note whose audio object is still in the blob store: the sweep removes it.
    blob_pending_delete: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    blob_delete_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    __table_args__ = (
        Index("ix_uploads_tenant", "tenant_id", "created_at"),
        Index("ix_uploads_open", "status", "last_driven_at"),
        Index("ux_uploads_client_request", "tenant_id", "client_request_id", unique=True),
        Index("ix_uploads_blob_pending", "blob_pending_delete"),
    )


class StoredFileRow(Base):
    """A user's audio file stored for later processing (seed 004); processing makes a note of it."""

    __tablename__ = "stored_files"

    file_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    blob_key: Mapped[str] = mapped_column(String(512), nullable=False)
    content_type: Mapped[str] = mapped_column(String(128), default="")
    filename: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    duration_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_stored_files_owner", "tenant_id", "user_id", "created_at"),)


MESSAGING = messaging_tables(Base.metadata)
