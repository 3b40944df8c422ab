"""Query's own tables: notes (the read model, one row per note), tombstones of deleted notes and
the messaging tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy import true as sa_true
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
    # types.RequestKind: 0 a note, 1 a transcript only (seed 002's async transcription).
    kind: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    client_request_id: Mapped[str] = mapped_column(String(128), nullable=False, default="", server_default="")
    callback_url: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")

    __table_args__ = (
        Index("ix_notes_tenant_created", "tenant_id", "created_at", "note_id"),
        Index("ix_notes_tenant_status", "tenant_id", "status", "created_at"),
        Index("ix_notes_tenant_external", "tenant_id", "external_id"),
    )


class WebhookConfigRow(Base):
    """A tenant's webhook: its callback URL and signing secrets (the previous one during rotation)."""

    __tablename__ = "webhook_configs"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    secret: Mapped[str] = mapped_column(String(128), nullable=False)
    # False while the current secret has never been answered to the tenant (one made for a
    # per-request callback before any configuration): the next PUT config answers it.
    secret_shown: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=sa_true())
    previous_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class WebhookDeliveryRow(Base):
    """One webhook call to make (at least once): written with the terminal state that causes it."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    request_id: Mapped[str] = mapped_column(String(36), nullable=False)
    # Which terminal state of which run: a redelivered event must not make a second delivery.
    dedup_key: Mapped[str] = mapped_column(String(160), nullable=False, unique=True)
    event: Mapped[str] = mapped_column(String(64), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # pending -> succeeded | failed; a replay puts it back to pending.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # Retries stop after this time (the bounded retry window).
    deadline: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant", "tenant_id", "created_at"),
    )


class WebhookAttemptRow(Base):
    """One HTTP attempt of a delivery: its answer or error and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), ForeignKey("webhook_deliveries.id"), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),)


MESSAGING = messaging_tables(Base.metadata)
DELETED_NOTES = tombstone_table(Base.metadata)
