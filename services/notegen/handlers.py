"""Note generation's logic, called by the gRPC servicer and the event consumer.

A completed transcript of a run becomes one generation: its sections are stored with the
``NoteGenerated`` outbox row in one transaction, or, for a transcript with no clinical content,
the generation is recorded as failed with ``TRANSCRIPT_TOO_SHORT``. A re-driven transcript for a
run already generated announces the stored outcome again instead of writing a second note.

A section keeps its public id (uuid5 of note id and label) across the note's generations. Every
generated row and every clinician's edit of a section id is a version of it (1, 2, ... over both).
A note's current sections are those of its latest completed generation, where an edited section
shows its latest edit: a regeneration never replaces a clinician's edit, it only adds history. A
section the clinician edited that the latest generation no longer writes is still shown.
"""

from __future__ import annotations

import logging
import re
import uuid

import grpc
from google.protobuf import json_format
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.events import DecodedEvent, from_timestamp, timestamp
from common.grpc_errors import ServiceError
from common.logs import log_context
from common.outbox import Outbox
from common.tombstones import forget_note_events, is_deleted, lock_note, record_deletion
from scribe.events.v1 import events_pb2 as ev
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.domain.sections import DOMAINS
from services.notegen.llm import LlmConfig, LlmGenerator
from services.notegen.domain.generator import GeneratedNote, TranscriptSegment, TranscriptTooShort, generate_note
from services.notegen.models import (
    DELETED_NOTES,
    FollowUpRow,
    GenerationRow,
    SectionEditRow,
    SectionRow,
    section_uuid,
)

log = logging.getLogger(__name__)

_SPEAKER_NAMES = {types.SPEAKER_DOCTOR: "doctor", types.SPEAKER_PATIENT: "patient"}
TOO_SHORT_MESSAGE = "We can't generate the note when the transcript is too short"
MAX_TITLE = 255
MAX_CONTENT = 100_000
MAX_ORDER = 1000
MAX_INSTRUCTIONS = 2000
# "" is the deployment's default: the LLM when one is configured, else the rules.
GENERATORS = ("", "rules", "llm")
# Concurrent edits of one section that still collide on a version (SQLite, see _lock_sections) retry.
_EDIT_ATTEMPTS = 3


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


# Short, frequent function words that tell the three supported languages apart.
_STOPWORDS = {
    "pt": {"o", "a", "os", "as", "um", "uma", "de", "do", "da", "que", "não", "é", "com", "para", "está", "você",
           "ele", "ela", "em", "no", "na", "mas", "tá", "isso", "dia", "vai", "vou"},
    "en": {"the", "a", "an", "and", "of", "to", "is", "it", "you", "i", "he", "she", "in", "on", "for", "with",
           "not", "that", "this", "have", "has", "was", "will", "your", "my"},
    "es": {"el", "la", "los", "las", "un", "una", "de", "del", "que", "no", "es", "con", "para", "está", "usted",
           "en", "pero", "muy", "y", "lo", "le", "se", "por", "ha", "voy"},
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def guess_language(transcript: types.Transcript) -> str:
    """pt, en or es for a transcript that came without its language, by counting function words."""
    counts = dict.fromkeys(_STOPWORDS, 0)
    for segment in transcript.segments:
        for word in _WORD.findall(segment.text.lower()):
            for language, words in _STOPWORDS.items():
                if word in words:
                    counts[language] += 1
    best = max(counts, key=lambda language: (counts[language], language == "en"))
    return best if counts[best] else "en"


class NotegenHandlers:
    def __init__(
        self, settings: NotegenSettings, session_maker: async_sessionmaker[AsyncSession], outbox: Outbox
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.outbox = outbox
        self.llm: LlmGenerator | None = None
        if settings.llm_base_url:
            key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
            self.llm = LlmGenerator(
                LlmConfig(settings.llm_base_url, settings.llm_model, key, timeout_s=settings.llm_timeout_s)
            )

    async def close(self) -> None:
        if self.llm is not None:
            await self.llm.close()

    async def generate(
        self,
        transcript: types.Transcript,
        domain: str = "",
        instructions: str | None = None,
        generator: str = "",
    ) -> GeneratedNote:
        """Write a note from a transcript; raises TranscriptTooShort.

        The offline rules generator always runs (it decides what is too short, and is the
        fallback); with an LLM endpoint configured (and ``generator`` not "rules"), its verified
        note replaces the rules' sections unless it fails, times out or has nothing traceable.
        """
        segments = segments_from_proto(transcript)
        language = transcript.language or guess_language(transcript)
        domain = domain or self.settings.domain
        note = generate_note(
            segments, language, domain=domain, min_words=self.settings.min_words, instructions=instructions or None
        )
        if self.llm is None or generator == "rules":
            return note
        llm_note = await self.llm.generate(segments, language, domain, instructions)
        if llm_note is None:
            return note
        llm_note.language = note.language
        # The facts beside the prose come from the traceable rules extraction.
        llm_note.structured = note.structured
        return llm_note

    async def generate_sync(self, transcript: types.Transcript, domain: str) -> GeneratedNote:
        if domain and domain not in DOMAINS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", f"domain must be one of {', '.join(DOMAINS)}"
            )
        try:
            return await self.generate(transcript, domain)
        except TranscriptTooShort:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, "TRANSCRIPT_TOO_SHORT", TOO_SHORT_MESSAGE
            ) from None

    async def on_transcription_completed(self, session: AsyncSession, event: DecodedEvent) -> None:
        payload: ev.TranscriptionCompleted = event.payload
        envelope = event.envelope
        if payload.kind == types.REQUEST_KIND_TRANSCRIPTION:
            return  # a transcript-only request (seed 002): its run ends with the transcript
        await lock_note(session, envelope.note_id)
        if await is_deleted(session, DELETED_NOTES, envelope.note_id):
            log.info("transcript of a deleted note ignored")
            return
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
            note = await self.generate(payload.transcript)
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
        generation.structured = structured_dict(note)
        generation.transcript = json_format.MessageToDict(payload.transcript, preserving_proto_field_name=True)
        generation.revision = 0
        session.add(generation)
        await session.flush()
        await self._write_sections(session, generation, note)
        await self._announce(session, generation)
        log.info("note generated", extra={"sections": len(note.sections), "generator": note.generator})

    async def on_note_deleted(self, session: AsyncSession, event: DecodedEvent) -> None:
        """Remove the note's generations, sections and edits, and keep a tombstone."""
        note_id, tenant_id = event.envelope.note_id, event.envelope.tenant_id
        await lock_note(session, note_id)
        edits = await session.execute(delete(SectionEditRow).where(SectionEditRow.note_id == note_id))
        await session.execute(delete(SectionRow).where(SectionRow.note_id == note_id))
        generations = await session.execute(delete(GenerationRow).where(GenerationRow.note_id == note_id))
        # Smart Feedback messages name the patient and the drugs: emptied; the rows stay (failed) so
        # that their batches still add up, and one being written finds no note and fails.
        await session.execute(
            update(FollowUpRow)
            .where(FollowUpRow.note_id == note_id, FollowUpRow.status != "running")
            .values(status="failed", message="", failure_code="NOTE_DELETED", failure_message="The note was deleted")
        )
        await record_deletion(session, DELETED_NOTES, note_id, tenant_id)
        await forget_note_events(session, self.outbox.table, note_id)
        log.info("note deleted", extra={"generations": generations.rowcount, "edits": edits.rowcount})

    async def _write_sections(self, session: AsyncSession, generation: GenerationRow, note: GeneratedNote) -> None:
        """Store ``note``'s sections as the generated rows of ``generation``'s current revision."""
        # Every section of the note, not only those written now: an edit of a section this run
        # drops must be either seen here or see this run as the note's latest.
        note_runs = select(GenerationRow.run_id).where(GenerationRow.note_id == generation.note_id)
        await _lock_sections(session, SectionRow.run_id.in_(note_runs.scalar_subquery()))
        section_ids = [section_uuid(generation.note_id, section.label) for section in note.sections]
        versions = await _next_versions(session, section_ids)
        for section_id, section in zip(section_ids, note.sections, strict=True):
            session.add(
                SectionRow(
                    id=str(uuid.uuid4()),
                    run_id=generation.run_id,
                    note_id=generation.note_id,
                    section_id=section_id,
                    version=versions[section_id],
                    label=section.label,
                    title=section.title,
                    content=section.content,
                    position=section.order,
                    source_segments=list(section.source_segments),
                    sentences=sentences_list(section),
                    revision=generation.revision,
                )
            )
            versions[section_id] += 1
        await session.flush()

    async def _announce(self, session: AsyncSession, generation: GenerationRow) -> None:
        run = run_ref(generation)
        if generation.status == "failed":
            payload = ev.NoteGenerationFailed(
                run=run, failure=types.Failure(code=generation.failure_code, message=generation.failure_message)
            )
        else:
            payload = ev.NoteGenerated(
                run=run,
                language=generation.language,
                generator=generation.generator,
                sections=await current_sections(session, generation),
            )
            payload.revision = generation.revision
            if generation.structured:
                payload.structured.update(generation.structured)
        await self.outbox.enqueue(session, payload, tenant_id=generation.tenant_id, note_id=generation.note_id)

    # -- regeneration -----------------------------------------------------------------------

    async def regenerate(self, request: pb.RegenerateNoteRequest) -> pb.RegenerateNoteResponse:
        """Write the note of its latest run again from the stored transcript, as a new revision.

        The generator runs outside any transaction (an LLM may take a while); the write then takes
        the next revision of the generation, so concurrent regenerations each get their own.
        """
        if request.generator not in GENERATORS:
            raise _validation(f"generator must be one of {', '.join(g for g in GENERATORS if g)}", "generator")
        if request.generator == "llm" and self.llm is None:
            raise _validation("no LLM generator is configured (SCRIBE_LLM_BASE_URL)", "generator")
        if len(request.instructions) > MAX_INSTRUCTIONS:
            raise _validation(f"instructions are longer than {MAX_INSTRUCTIONS} characters", "instructions")
        try:
            note_id = str(uuid.UUID(request.note_id))
        except ValueError:
            raise _note_not_found() from None
        async with self.session_maker() as session:
            latest = await latest_generation(session, note_id)
            if latest is None:
                if await session.scalar(select(GenerationRow.tenant_id).where(GenerationRow.note_id == note_id)):
                    raise ServiceError(
                        grpc.StatusCode.FAILED_PRECONDITION, "NOTE_NOT_READY", "The note has no generated note to write again"
                    )
                raise _note_not_found()
            if latest.tenant_id != request.tenant_id:
                raise _access_denied()
            if latest.transcript is None:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "NOTE_NOT_READY",
                    "This note was generated before its transcript was kept; retry the note instead",
                )
            run_id = latest.run_id
            transcript = json_format.ParseDict(latest.transcript, types.Transcript(), ignore_unknown_fields=True)
        try:
            note = await self.generate(
                transcript, instructions=request.instructions or None, generator=request.generator
            )
        except TranscriptTooShort:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "TRANSCRIPT_TOO_SHORT", TOO_SHORT_MESSAGE) from None
        async with self.session_maker() as session, session.begin():
            await lock_note(session, note_id)
            generation = await session.get(GenerationRow, run_id, with_for_update=True)
            if generation is None:
                raise _note_not_found()  # deleted while the generator ran
            generation.revision += 1
            generation.generator = note.generator
            generation.language = note.language
            generation.structured = structured_dict(note)
            await session.flush()
            await self._write_sections(session, generation, note)
            await self._announce(session, generation)
            sections = await current_sections(session, generation)
            response = pb.RegenerateNoteResponse(
                note_id=note_id,
                run=run_ref(generation),
                generator=generation.generator,
                revision=generation.revision,
                sections=sections,
            )
            if generation.structured:
                response.structured.update(generation.structured)
        with log_context(note_id=note_id, tenant_id=request.tenant_id):
            log.info("note regenerated", extra={"revision": response.revision, "generator": response.generator})
        return response

    # -- edits ------------------------------------------------------------------------------

    async def update_section(self, request: pb.UpdateSectionRequest) -> pb.UpdateSectionResponse:
        """Store a clinician's edit of a section as its new version and announce it (one transaction)."""
        _validate_update(request)
        try:
            section_id = str(uuid.UUID(request.section_id))
        except ValueError:
            raise _section_not_found() from None
        for attempt in range(1, _EDIT_ATTEMPTS + 1):
            try:
                async with self.session_maker() as session, session.begin():
                    return await self._update_section_once(session, request, section_id)
            except IntegrityError:
                # Another edit of the section took the version we read (uq_section_edits_version).
                log.info("section edit collided on its version", extra={"attempt": attempt})
        raise ServiceError(
            grpc.StatusCode.ABORTED, "CONCURRENT_UPDATE", "The section is being edited concurrently; try again"
        )

    async def _update_section_once(
        self, session: AsyncSession, request: pb.UpdateSectionRequest, section_id: str
    ) -> pb.UpdateSectionResponse:
        # The note's lock first, as a deletion takes it before the section rows: never a deadlock.
        note_id = await session.scalar(select(SectionRow.note_id).where(SectionRow.section_id == section_id).limit(1))
        if note_id is None:
            raise _section_not_found()
        await lock_note(session, note_id)
        if await is_deleted(session, DELETED_NOTES, note_id):
            raise _section_not_found()  # deleted since
        await _lock_sections(session, SectionRow.section_id == section_id)
        found = (
            await session.execute(
                select(SectionRow, GenerationRow.tenant_id)
                .join(GenerationRow, SectionRow.run_id == GenerationRow.run_id)
                .where(SectionRow.section_id == section_id)
                .order_by(SectionRow.version.desc())
                .limit(1)
            )
        ).first()
        if found is None:
            raise _section_not_found()
        generated, tenant_id = found
        if tenant_id != request.tenant_id:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant"
            )
        latest = await latest_generation(session, generated.note_id)
        assert latest is not None  # the section's own generation completed
        current = next((s for s in await current_sections(session, latest) if s.id == section_id), None)
        if current is None:
            # A section the latest generation no longer writes and nobody edited: edit its last text.
            current = section_to_proto(generated, source_segments=[])
        version = (await _next_versions(session, [section_id]))[section_id]
        edit = SectionEditRow(
            id=str(uuid.uuid4()),
            section_id=section_id,
            note_id=generated.note_id,
            tenant_id=tenant_id,
            label=generated.label,
            version=version,
            title=request.title if request.HasField("title") else current.title,
            content=request.content if request.HasField("content") else current.content,
            position=request.order if request.HasField("order") else current.order,
            created_at=utcnow(),
        )
        session.add(edit)
        await session.flush()
        section = edit_to_proto(edit, source_segments=current.source_segments)
        run = run_ref(latest)
        await self.outbox.enqueue(
            session, ev.NoteSectionUpdated(run=run, section=section), tenant_id=tenant_id, note_id=edit.note_id
        )
        log.info("section edited", extra={"label": edit.label, "version": version})
        return pb.UpdateSectionResponse(note_id=edit.note_id, section=section, run=run)


# -- reads and helpers ---------------------------------------------------------------------------


def run_ref(generation: GenerationRow) -> types.RunRef:
    return types.RunRef(
        run_id=generation.run_id, attempt=generation.attempt, requested_at=timestamp(generation.requested_at)
    )


async def latest_generation(session: AsyncSession, note_id: str) -> GenerationRow | None:
    """The note's latest completed generation (highest attempt, then newest)."""
    return await session.scalar(
        select(GenerationRow)
        .where(GenerationRow.note_id == note_id, GenerationRow.status == "completed")
        .order_by(GenerationRow.attempt.desc(), GenerationRow.created_at.desc(), GenerationRow.run_id.desc())
        .limit(1)
    )


async def current_sections(session: AsyncSession, generation: GenerationRow) -> list[types.NoteSection]:
    """The note's sections as of ``generation`` with every clinician's edit applied, by order.

    Per section id: its latest edit when there is one (edited), else the row ``generation`` wrote.
    Edited sections that ``generation`` does not write are kept. Source segments are those of the
    row ``generation`` wrote, if any.
    """
    generated = (
        await session.scalars(
            select(SectionRow).where(
                SectionRow.run_id == generation.run_id, SectionRow.revision == generation.revision
            )
        )
    ).all()
    latest_edits: dict[str, SectionEditRow] = {}
    edits = await session.scalars(
        select(SectionEditRow).where(SectionEditRow.note_id == generation.note_id).order_by(SectionEditRow.version)
    )
    for edit in edits:
        latest_edits[edit.section_id] = edit
    sections = []
    for row in generated:
        edit = latest_edits.pop(row.section_id, None)
        if edit is None:
            sections.append(section_to_proto(row))
        else:
            sections.append(edit_to_proto(edit, source_segments=row.source_segments))
    sections.extend(edit_to_proto(edit, source_segments=[]) for edit in latest_edits.values())
    return sorted(sections, key=lambda s: (s.order, s.label))


async def _lock_sections(session: AsyncSession, where: ColumnElement[bool]) -> None:
    """Keep other writers of these sections out until commit, so that what is read next stays true.

    Edits and generations of a note take it before reading versions and current sections.
    PostgreSQL: row locks on the generated rows (in id order: two lockers never deadlock). SQLite has
    one writer at a time but takes it only at the first write (reads before run outside the
    transaction), so a write of no effect takes it now.
    """
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(
            update(SectionRow)
            .where(where)
            .values(version=SectionRow.version)
            .execution_options(synchronize_session=False)
        )
        return
    await session.execute(select(SectionRow.id).where(where).order_by(SectionRow.id).with_for_update())


async def _next_versions(session: AsyncSession, section_ids: list[str]) -> dict[str, int]:
    """1 + the highest version of each section id over its generated rows and edits (1 when new)."""
    versions = dict.fromkeys(section_ids, 0)
    for model in (SectionRow, SectionEditRow):
        rows = await session.execute(
            select(model.section_id, func.max(model.version))
            .where(model.section_id.in_(section_ids))
            .group_by(model.section_id)
        )
        for section_id, version in rows:
            versions[section_id] = max(versions[section_id], version or 0)
    return {section_id: version + 1 for section_id, version in versions.items()}


def _validation(message: str, field: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", message, {"field": field})


def _note_not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", "Note not found")


def _access_denied() -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant")


def _section_not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "SECTION_NOT_FOUND", "Section not found")


def _validate_update(request: pb.UpdateSectionRequest) -> None:
    if not any(request.HasField(field) for field in ("title", "content", "order")):
        raise _validation("Set at least one of title, content and order", "section")
    if request.HasField("title"):
        if not request.title.strip():
            raise _validation("title must not be empty", "title")
        if len(request.title) > MAX_TITLE:
            raise _validation(f"title is longer than {MAX_TITLE} characters", "title")
    if request.HasField("content") and len(request.content) > MAX_CONTENT:
        raise _validation(f"content is longer than {MAX_CONTENT} characters", "content")
    if request.HasField("order") and not 0 <= request.order <= MAX_ORDER:
        raise _validation(f"order must be between 0 and {MAX_ORDER}", "order")


def structured_dict(note: GeneratedNote) -> dict | None:
    """The note's structured facts as JSON-ready data (None from a generator without them)."""
    structured = getattr(note, "structured", None)
    return structured.to_dict() if structured is not None else None


def sentences_list(section) -> list[dict]:
    """A generated section's sentences with their provenance, as stored."""
    return [
        {
            "text": sentence.text,
            "source_segments": list(sentence.source_segments),
            "start_ms": sentence.start_ms,
            "end_ms": sentence.end_ms,
        }
        for sentence in getattr(section, "sentences", ()) or ()
    ]


def sentence_ref(sentence: dict) -> types.SentenceRef:
    return types.SentenceRef(
        text=sentence["text"],
        source_segments=sentence["source_segments"],
        start_ms=sentence["start_ms"],
        end_ms=sentence["end_ms"],
    )


def section_to_proto(section: SectionRow, *, source_segments: list[int] | None = None) -> types.NoteSection:
    """A generated row as the section it shows (not edited)."""
    return types.NoteSection(
        id=section.section_id,
        label=section.label,
        title=section.title,
        content=section.content,
        order=section.position,
        source_segments=section.source_segments if source_segments is None else source_segments,
        version=section.version,
        edited=False,
        sentences=[sentence_ref(sentence) for sentence in section.sentences or []],
    )


def edit_to_proto(edit: SectionEditRow, *, source_segments) -> types.NoteSection:
    return types.NoteSection(
        id=edit.section_id,
        label=edit.label,
        title=edit.title,
        content=edit.content,
        order=edit.position,
        source_segments=list(source_segments),
        version=edit.version,
        edited=True,
    )
