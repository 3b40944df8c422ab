"""Note generation's logic, called by the gRPC servicer and the event consumer.

A completed transcript of a run becomes one generation: its sections are stored with the
``NoteGenerated`` outbox row in one transaction, or, for a transcript with no clinical content,
the generation is recorded as failed with ``TRANSCRIPT_TOO_SHORT``. A re-driven transcript for a
run already generated announces the stored outcome again instead of writing a second note.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.events import DecodedEvent, from_timestamp, timestamp
from common.grpc_errors import ServiceError
from common.outbox import Outbox
from scribe.events.v1 import events_pb2 as ev
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.domain.sections import DOMAINS
from services.notegen.domain.generator import GeneratedNote, TranscriptSegment, TranscriptTooShort, generate_note
from services.notegen.models import GenerationRow, SectionRow

log = logging.getLogger(__name__)

_SPEAKER_NAMES = {types.SPEAKER_DOCTOR: "doctor", types.SPEAKER_PATIENT: "patient"}
TOO_SHORT_MESSAGE = "We can't generate the note when the transcript is too short"


def segments_from_proto(transcript: types.Transcript) -> list[TranscriptSegment]:
    return [
        TranscriptSegment(
            text=s.text,
            start_ms=s.start_ms,
            end_ms=s.end_ms,
            speaker=_SPEAKER_NAMES.get(s.speaker, "unspecified"),
        )
        for s in transcript.segments
    ]


class NotegenHandlers:
    def __init__(
        self, settings: NotegenSettings, session_maker: async_sessionmaker[AsyncSession], outbox: Outbox
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.outbox = outbox

    def generate(self, transcript: types.Transcript, domain: str = "") -> GeneratedNote:
        """Write a note from a transcript (pure, fast); raises TranscriptTooShort."""
        return generate_note(
            segments_from_proto(transcript),
            transcript.language or "en",
            domain=domain or self.settings.domain,
            min_words=self.settings.min_words,
        )

    def generate_sync(self, transcript: types.Transcript, domain: str) -> GeneratedNote:
        if domain and domain not in DOMAINS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", f"domain must be one of {', '.join(DOMAINS)}"
            )
        try:
            return self.generate(transcript, domain)
        except TranscriptTooShort:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, "TRANSCRIPT_TOO_SHORT", TOO_SHORT_MESSAGE
            ) from None

    async def on_transcription_completed(self, session: AsyncSession, event: DecodedEvent) -> None:
        payload: ev.TranscriptionCompleted = event.payload
        envelope = event.envelope
        existing = await session.get(GenerationRow, payload.run.run_id)
        if existing is not None:
            await self._announce(session, existing)
            return
        generation = GenerationRow(
            run_id=payload.run.run_id,
            note_id=envelope.note_id,
            tenant_id=envelope.tenant_id,
            attempt=payload.run.attempt or 1,
            requested_at=from_timestamp(payload.run.requested_at),
            language=payload.transcript.language,
            created_at=utcnow(),
        )
        try:
            note = self.generate(payload.transcript)
        except TranscriptTooShort:
            generation.status = "failed"
            generation.failure_code = "TRANSCRIPT_TOO_SHORT"
            generation.failure_message = TOO_SHORT_MESSAGE
            session.add(generation)
            await session.flush()
            await self._announce(session, generation)
            log.info("transcript too short for a note")
            return
        generation.status = "completed"
        generation.language = note.language
        generation.generator = note.generator
        session.add(generation)
        await session.flush()
        for section in note.sections:
            session.add(
                SectionRow(
                    id=str(uuid.uuid4()),
                    run_id=generation.run_id,
                    note_id=generation.note_id,
                    label=section.label,
                    title=section.title,
                    content=section.content,
                    position=section.order,
                    source_segments=list(section.source_segments),
                )
            )
        await session.flush()
        await self._announce(session, generation)
        log.info("note generated", extra={"sections": len(note.sections), "generator": note.generator})

    async def _announce(self, session: AsyncSession, generation: GenerationRow) -> None:
        run = types.RunRef(
            run_id=generation.run_id, attempt=generation.attempt, requested_at=timestamp(generation.requested_at)
        )
        if generation.status == "failed":
            payload = ev.NoteGenerationFailed(
                run=run, failure=types.Failure(code=generation.failure_code, message=generation.failure_message)
            )
        else:
            sections = (
                await session.scalars(
                    select(SectionRow).where(SectionRow.run_id == generation.run_id).order_by(SectionRow.position)
                )
            ).all()
            payload = ev.NoteGenerated(
                run=run,
                language=generation.language,
                generator=generation.generator,
                sections=[section_to_proto(s) for s in sections],
            )
        await self.outbox.enqueue(session, payload, tenant_id=generation.tenant_id, note_id=generation.note_id)


def section_to_proto(section: SectionRow) -> types.NoteSection:
    return types.NoteSection(
        id=section.id,
        label=section.label,
        title=section.title,
        content=section.content,
        order=section.position,
        source_segments=section.source_segments,
    )
