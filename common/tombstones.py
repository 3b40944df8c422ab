"""Tombstones of deleted notes, the same table in every service that consumes ``NoteDeleted``.

A service that applies ``NoteDeleted`` removes what it holds of the note and records the note id
here, in the same transaction. Every handler of a note's other events looks here first, so an event
still in flight when the note was deleted (a ``TranscriptionCompleted`` from a run that was already
going, a re-delivered ``AudioIngested``) cannot bring the note back. Only ids and the time are kept.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, MetaData, String, Table, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import UTCDateTime, utcnow

TABLE_NAME = "deleted_notes"


def tombstone_table(metadata: MetaData) -> Table:
    """Define the ``deleted_notes`` table on a service's own metadata."""
    return Table(
        TABLE_NAME,
        metadata,
        Column("note_id", String(36), primary_key=True),
        Column("tenant_id", String(64), nullable=False),
        Column("deleted_at", UTCDateTime, nullable=False),
    )


def create_tombstone_table(op) -> None:
    """Alembic: create the ``deleted_notes`` table."""
    tombstone_table(MetaData()).create(op.get_bind())


async def lock_note(session: AsyncSession, note_id: str) -> None:
    """Serialize, until the transaction ends, the writers of one note that use this lock.

    PostgreSQL: a transaction-scoped advisory lock on the note id, so that a ``NoteDeleted`` and
    another event of the same note applied concurrently by two replicas do not interleave (the
    other event would otherwise write rows the deletion no longer sees). SQLite has one writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:note_id))"), {"note_id": note_id})


async def is_deleted(session: AsyncSession, table: Table, note_id: str) -> bool:
    """True when ``note_id`` has a tombstone."""
    return await session.scalar(select(table.c.note_id).where(table.c.note_id == note_id)) is not None


async def record_deletion(
    session: AsyncSession, table: Table, note_id: str, tenant_id: str, deleted_at: dt.datetime | None = None
) -> None:
    """Write the tombstone of ``note_id`` (once: a second one is a no-op)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(
        dialect.insert(table)
        .values(note_id=note_id, tenant_id=tenant_id, deleted_at=deleted_at or utcnow())
        .on_conflict_do_nothing(index_elements=["note_id"])
    )


async def forget_note_events(session: AsyncSession, outbox: Table, note_id: str) -> int:
    """Remove the note's events from a service's outbox, sent or not (their payloads carry the
    note's name, transcript or sections; the relay would only purge sent ones an hour later).
    Its events still unpublished would be ignored by every consumer anyway. Returns how many."""
    result = await session.execute(delete(outbox).where(outbox.c.message_key == note_id))
    return result.rowcount or 0
