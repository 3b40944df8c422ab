"""Query's logic: the note projection fed by every event, and the reads the gRPC servicer serves.

The projection is order-tolerant and idempotent. Topics are per event type, so one note's events can
arrive in any order across topics, and an event can come again (redelivered, or re-driven with a new
event id but the same run). Each row keeps the run it shows (``attempt``) and how far that run got
(``stage``): an event of a newer run resets the row's run, an event of the shown run only moves the
status forward, an event of an older run is ignored. Any event may be the first one seen for a note.

``NoteDeleted`` removes a note's row and leaves a tombstone: any event of the note that arrives
later, in whatever order, is ignored, so a deleted note never comes back.

Reads are scoped to the caller's tenant. A read of a note the projection has not seen yet (the
upload's 201 came before its ``AudioIngested`` reached us) asks ingestion, waits a bounded while
for the projection, and else answers from ingestion's upload, so a read after a 201 never says 404.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from aiokafka import TopicPartition
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.consumer import PermanentError
from common.db import utcnow
from common.events import DecodedEvent, from_timestamp, timestamp
from common.grpc_errors import ServiceError
from common.telemetry import Sample
from common.tombstones import is_deleted, lock_note, record_deletion
from scribe.events.v1 import events_pb2 as ev
from scribe.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from scribe.query.v1 import query_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from services.query import export, webhooks
from services.query.config import QuerySettings
from services.query.models import DELETED_NOTES, NoteRow, WebhookAttemptRow, WebhookDeliveryRow

log = logging.getLogger(__name__)

# How far a run got. A run's status only ever moves to a higher stage.
STAGE_INGESTED = 0
STAGE_PROCESSING = 1
STAGE_TRANSCRIBED = 2
STAGE_TERMINAL = 3

_STAGE_BY_EVENT: dict[type[Message], int] = {
    ev.AudioIngested: STAGE_INGESTED,
    ev.TranscriptionRequested: STAGE_PROCESSING,
    ev.TranscriptionStarted: STAGE_PROCESSING,
    ev.TranscriptionProgress: STAGE_PROCESSING,
    ev.TranscriptionCompleted: STAGE_TRANSCRIBED,
    ev.TranscriptionFailed: STAGE_TERMINAL,
    ev.NoteGenerated: STAGE_TERMINAL,
    ev.NoteGenerationFailed: STAGE_TERMINAL,
}
_STATUS_BY_EVENT: dict[type[Message], str] = {
    ev.AudioIngested: "pending",
    # A retry: the note is processing from the moment it is accepted (seed 000).
    ev.TranscriptionRequested: "processing",
    ev.TranscriptionStarted: "processing",
    ev.TranscriptionProgress: "processing",
    ev.TranscriptionCompleted: "processing",
    ev.TranscriptionFailed: "failed",
    ev.NoteGenerated: "completed",
    ev.NoteGenerationFailed: "failed",
}
PROJECTED_EVENTS: tuple[type[Message], ...] = (*_STAGE_BY_EVENT, ev.NoteSectionUpdated, ev.NoteDeleted)
# Events after which a terminal row may owe its webhook: the terminal events, and the upload's
# facts (which carry the callback URL and may arrive after the outcome, on another topic).
_WEBHOOK_TRIGGERS = (
    ev.TranscriptionCompleted,
    ev.TranscriptionFailed,
    ev.NoteGenerated,
    ev.NoteGenerationFailed,
    ev.AudioIngested,
    ev.TranscriptionRequested,
)

STATUS_TO_PROTO = {
    "pending": types.NOTE_STATUS_PENDING,
    "processing": types.NOTE_STATUS_PROCESSING,
    "completed": types.NOTE_STATUS_COMPLETED,
    "failed": types.NOTE_STATUS_FAILED,
}
STATUS_FROM_PROTO = {value: key for key, value in STATUS_TO_PROTO.items()}
_SPEAKER_TO_NAME = {
    types.SPEAKER_UNSPECIFIED: "unspecified",
    types.SPEAKER_DOCTOR: "doctor",
    types.SPEAKER_PATIENT: "patient",
}
_SPEAKER_FROM_NAME = {value: key for key, value in _SPEAKER_TO_NAME.items()}

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# How often a read of a not-yet-projected note looks again.
READ_YOUR_WRITES_POLL_S = 0.05
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LIKE_SPECIALS = re.compile(r"([\\%_])")


def search_key(text: str) -> str:
    """``text`` case-folded with accents stripped (NFKD): "Réx" and "REX" both give "rex"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _clip(value: str, length: int) -> str:
    # Columns are bounded; a too-long field must not make the whole note unprojectable.
    return value[:length]


def _not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", "Note not found")


def _access_denied() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant"
    )


def _request_not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "REQUEST_NOT_FOUND", "Asynchronous request not found")


def _validation(message: str, field: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", message, {"field": field})


# -- projection --------------------------------------------------------------------------------


def _attempt(payload: Message) -> int:
    # Every producer fills the run; an event without one can only belong to the first run.
    return payload.run.attempt or 1


def _occurred_at(envelope: ev.EventEnvelope) -> dt.datetime:
    return from_timestamp(envelope.occurred_at) if envelope.HasField("occurred_at") else utcnow()


def _segments_json(transcript: types.Transcript) -> list[dict[str, Any]]:
    segments = [
        {
            "start_ms": segment.start_ms,
            "end_ms": segment.end_ms,
            "text": segment.text,
            "speaker": _SPEAKER_TO_NAME.get(segment.speaker, "unspecified"),
            "confidence": segment.confidence,
        }
        for segment in transcript.segments
    ]
    return sorted(segments, key=lambda segment: (segment["start_ms"], segment["end_ms"]))


def _sections_json(sections) -> list[dict[str, Any]]:
    items = [
        {
            "id": section.id,
            "label": section.label,
            "title": section.title,
            "content": section.content,
            "order": section.order,
            "source_segments": list(section.source_segments),
            "version": section.version,
            "edited": section.edited,
            "sentences": [
                {
                    "text": sentence.text,
                    "source_segments": list(sentence.source_segments),
                    "start_ms": sentence.start_ms,
                    "end_ms": sentence.end_ms,
                }
                for sentence in section.sentences
            ],
        }
        for section in sections
    ]
    return sorted(items, key=lambda section: section["order"])


def _merge_sections(current: list[dict[str, Any]] | None, incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sections of ``incoming`` over ``current``, keeping per id the higher version.

    A clinician's edit (``NoteSectionUpdated``) and the generation it edits (``NoteGenerated``)
    travel on different topics and may arrive in either order; the version decides.
    """
    kept = {section["id"]: section for section in current or []}
    merged = []
    for section in incoming:
        existing = kept.pop(section["id"], None)
        if existing is not None and existing.get("version", 0) > section.get("version", 0):
            merged.append(existing)
        else:
            merged.append(section)
    merged.extend(kept.values())
    return sorted(merged, key=lambda section: (section["order"], section["label"]))


def _fill_note_facts(row: NoteRow, payload: ev.AudioIngested | ev.TranscriptionRequested) -> None:
    """What the client told us at upload: the same in every run, so any AudioIngested may fill it."""
    note = payload.note
    row.name = _clip(note.name, 255)
    row.name_search = search_key(row.name)
    row.gender = _clip(note.gender, 64)
    row.external_id = _clip(note.external_id, 255)
    row.metadata_items = [{"key": item.key, "value": item.value} for item in note.metadata]
    row.language_hint = _clip(note.language_hint, 16)
    row.kind = int(note.kind)
    row.client_request_id = _clip(note.client_request_id, 128)
    row.callback_url = note.callback_url
    if payload.HasField("created_at"):
        row.created_at = from_timestamp(payload.created_at)
    if payload.audio.duration_ms > 0:
        row.duration_ms = payload.audio.duration_ms


def _start_run(row: NoteRow, run: types.RunRef) -> None:
    """A newer run (a retry) replaces what the row showed of the previous one."""
    row.attempt = run.attempt or 1
    row.run_id = _clip(run.run_id, 64)
    row.run_requested_at = from_timestamp(run.requested_at) if run.HasField("requested_at") else None
    row.stage = STAGE_INGESTED
    row.status = "pending"
    row.progress = 0.0
    row.language = ""
    row.transcript = None
    row.sections = None
    row.structured = None
    row.revision = 0
    row.generator = ""
    row.failure_code = ""
    row.failure_message = ""


def _apply_run_event(row: NoteRow, payload: Message) -> None:
    """An event of the run the row shows: store what it carries, move the status only forward."""
    if not row.run_id:
        row.run_id = _clip(payload.run.run_id, 64)
    if row.run_requested_at is None and payload.run.HasField("requested_at"):
        row.run_requested_at = from_timestamp(payload.run.requested_at)
    # Of two contradicting terminal events of one run, the first one seen wins.
    terminal_seen = row.stage >= STAGE_TERMINAL
    if isinstance(payload, ev.TranscriptionCompleted):
        # Kept even when the note failed later (in generation): the transcript is real.
        row.transcript = _segments_json(payload.transcript)
        if payload.transcript.language:
            row.language = _clip(payload.transcript.language, 16)
        if payload.transcript.duration_ms > 0:
            row.duration_ms = payload.transcript.duration_ms
    elif isinstance(payload, ev.TranscriptionProgress):
        # Progress events come on their own topic, so they may arrive after the completion.
        if row.stage <= STAGE_PROCESSING:
            row.progress = max(row.progress or 0.0, min(max(payload.progress, 0.0), 1.0))
    elif isinstance(payload, ev.NoteSectionUpdated):
        # Not a step of the run: only the section changes, never the status.
        row.sections = _merge_sections(row.sections, _sections_json([payload.section]))
        return
    elif isinstance(payload, ev.NoteGenerated):
        if row.status != "failed" and payload.revision >= (row.revision or 0):
            incoming = _sections_json(payload.sections)
            current = row.sections
            if payload.revision > (row.revision or 0) and current:
                # A regeneration: sections it no longer writes go; the newest version per id stays.
                ids = {section["id"] for section in incoming}
                current = [section for section in current if section["id"] in ids]
            # A re-announced NoteGenerated of the same revision never brings back an older version.
            row.sections = _merge_sections(current, incoming)
            row.revision = payload.revision
            row.generator = _clip(payload.generator, 64)
            if payload.HasField("structured"):
                row.structured = json_format.MessageToDict(payload.structured)
            if payload.language and not row.language:
                row.language = _clip(payload.language, 16)
    elif isinstance(payload, (ev.TranscriptionFailed, ev.NoteGenerationFailed)):
        if terminal_seen:
            return
        row.failure_code = _clip(payload.failure.code, 64)
        row.failure_message = payload.failure.message

    stage = _STAGE_BY_EVENT[type(payload)]
    status = _STATUS_BY_EVENT[type(payload)]
    if isinstance(payload, ev.TranscriptionCompleted) and (
        payload.kind == types.REQUEST_KIND_TRANSCRIPTION or row.kind == types.REQUEST_KIND_TRANSCRIPTION
    ):
        # A transcript-only request (seed 002) ends with its transcript: no note follows.
        row.kind = types.REQUEST_KIND_TRANSCRIPTION
        stage = STAGE_TERMINAL
        if terminal_seen:
            return
        if payload.transcript.segments:
            status = "completed"
        else:
            status = "failed"
            row.failure_code = "TRANSCRIPT_TOO_SHORT"
            row.failure_message = "No speech was transcribed from the audio"
    if stage > row.stage:
        row.stage = stage
        row.status = status
        if stage == STAGE_TRANSCRIBED or row.status == "completed":
            row.progress = 1.0


def merge_event(row: NoteRow, payload: Message, occurred_at: dt.datetime) -> None:
    """Fold one event into a note's row; the same event any number of times gives the same row."""
    if occurred_at > row.updated_at and not isinstance(payload, ev.TranscriptionProgress):
        row.updated_at = occurred_at
    if isinstance(payload, (ev.AudioIngested, ev.TranscriptionRequested)):
        _fill_note_facts(row, payload)
    attempt = _attempt(payload)
    if attempt < row.attempt:
        return  # a run that a retry superseded
    if attempt > row.attempt:
        _start_run(row, payload.run)
    _apply_run_event(row, payload)


def initial_row_values(envelope: ev.EventEnvelope, payload: Message, occurred_at: dt.datetime) -> dict[str, Any]:
    """The row of a note seen for the first time, before its first event is merged in."""
    run = payload.run
    created_at = occurred_at
    if run.HasField("requested_at") and _attempt(payload) == 1:
        # The first run is requested when the note is created: the best guess until AudioIngested.
        created_at = min(created_at, from_timestamp(run.requested_at))
    return {
        "note_id": envelope.note_id,
        "tenant_id": envelope.tenant_id,
        "name": "",
        "name_search": "",
        "gender": "",
        "external_id": "",
        "metadata_items": [],
        "language_hint": "",
        "created_at": created_at,
        "updated_at": occurred_at,
        "status": "pending",
        "run_id": _clip(run.run_id, 64),
        "run_requested_at": from_timestamp(run.requested_at) if run.HasField("requested_at") else None,
        "attempt": _attempt(payload),
        "stage": STAGE_INGESTED,
        "language": "",
        "duration_ms": 0,
        "transcript": None,
        "sections": None,
        "structured": None,
        "revision": 0,
        "generator": "",
        "failure_code": "",
        "failure_message": "",
        "progress": 0.0,
        "kind": int(payload.kind) if isinstance(payload, ev.TranscriptionCompleted) else 0,
        "client_request_id": "",
        "callback_url": "",
    }


class NoteProjection:
    """Applies events to the notes table; called by the consumer inside its inbox transaction.

    With settings, a terminal state also writes its webhook delivery in the same transaction.
    """

    def __init__(self, settings: QuerySettings | None = None) -> None:
        self.settings = settings

    async def apply(self, session: AsyncSession, event: DecodedEvent) -> None:
        envelope, payload = event.envelope, event.payload
        if not envelope.tenant_id or len(envelope.tenant_id) > 64 or len(envelope.note_id) > 36:
            raise PermanentError("envelope without a usable tenant_id or note_id")
        # One note's events from different topics may be applied by different replicas at once:
        # a deletion must not interleave with an event that would create the row again.
        await lock_note(session, envelope.note_id)
        if await is_deleted(session, DELETED_NOTES, envelope.note_id):
            return  # a deleted note's late event (or a redelivered NoteDeleted)
        if isinstance(payload, ev.NoteDeleted):
            await self._delete(session, envelope)
            return
        occurred_at = _occurred_at(envelope)
        row = await self._locked_row(session, envelope, payload, occurred_at)
        if row.tenant_id != envelope.tenant_id:
            # A note never changes tenant: such an event is forged or corrupt, not to be applied.
            raise PermanentError("event tenant does not match the note's tenant")
        merge_event(row, payload, occurred_at)
        if self.settings is not None and row.stage >= STAGE_TERMINAL and isinstance(payload, _WEBHOOK_TRIGGERS):
            await webhooks.enqueue_terminal(session, row, self.settings)

    async def follow_up_written(self, session: AsyncSession, event: DecodedEvent) -> None:
        """A Smart Feedback follow-up was written: its webhook, when the tenant has one."""
        if self.settings is not None:
            await webhooks.enqueue_follow_up(session, event.envelope, event.payload, self.settings)

    @staticmethod
    async def _delete(session: AsyncSession, envelope: ev.EventEnvelope) -> None:
        row = await session.get(NoteRow, envelope.note_id, with_for_update=True)
        if row is not None:
            if row.tenant_id != envelope.tenant_id:
                raise PermanentError("event tenant does not match the note's tenant")
            await session.delete(row)
        # Webhook bodies of the note (an async transcript holds its text) and their attempt log.
        of_note = (WebhookDeliveryRow.request_id == envelope.note_id, WebhookDeliveryRow.tenant_id == envelope.tenant_id)
        deliveries = select(WebhookDeliveryRow.id).where(*of_note)
        await session.execute(delete(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id.in_(deliveries)))
        await session.execute(delete(WebhookDeliveryRow).where(*of_note))
        await record_deletion(session, DELETED_NOTES, envelope.note_id, envelope.tenant_id)
        log.info("note deleted from the read model")

    async def _locked_row(
        self, session: AsyncSession, envelope: ev.EventEnvelope, payload: Message, occurred_at: dt.datetime
    ) -> NoteRow:
        # Locked so that replicas applying events of one note from different topics do not
        # overwrite each other (SQLite has one writer anyway and ignores FOR UPDATE).
        row = await session.get(NoteRow, envelope.note_id, with_for_update=True)
        if row is not None:
            return row
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        # A concurrent first event of the same note may insert it too: whoever loses goes on with
        # the winner's row instead of failing.
        await session.execute(
            dialect.insert(NoteRow)
            .values(**initial_row_values(envelope, payload, occurred_at))
            .on_conflict_do_nothing(index_elements=[NoteRow.note_id])
        )
        row = await session.get(NoteRow, envelope.note_id, with_for_update=True, populate_existing=True)
        assert row is not None
        return row


# -- reads -------------------------------------------------------------------------------------


class LagSource(Protocol):
    async def lag_by_partition(self) -> dict[TopicPartition, int]: ...


@dataclass(frozen=True)
class _StatusRow:
    tenant_id: str
    status: str
    attempt: int


# Everything a list item shows: never the transcript or sections, which can be large.
_LIST_COLUMNS = [
    NoteRow.note_id,
    NoteRow.tenant_id,
    NoteRow.name,
    NoteRow.gender,
    NoteRow.external_id,
    NoteRow.metadata_items,
    NoteRow.language_hint,
    NoteRow.created_at,
    NoteRow.updated_at,
    NoteRow.status,
    NoteRow.run_id,
    NoteRow.run_requested_at,
    NoteRow.attempt,
    NoteRow.language,
    NoteRow.failure_code,
    NoteRow.failure_message,
    NoteRow.progress,
]


def _note_view(row: Any, *, with_content: bool) -> pb.NoteView:
    """A row (ORM object or a row of ``_LIST_COLUMNS``) as the API's NoteView."""
    view = pb.NoteView(
        note_id=row.note_id,
        tenant_id=row.tenant_id,
        info=types.NoteInfo(
            name=row.name,
            gender=row.gender,
            external_id=row.external_id,
            metadata=[types.MetadataItem(key=item["key"], value=item["value"]) for item in row.metadata_items or []],
            language_hint=row.language_hint,
        ),
        status=STATUS_TO_PROTO.get(row.status, types.NOTE_STATUS_UNSPECIFIED),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        language=row.language,
        run=types.RunRef(run_id=row.run_id, attempt=row.attempt),
        progress=row.progress,
    )
    if row.run_requested_at is not None:
        view.run.requested_at.CopyFrom(timestamp(row.run_requested_at))
    if row.status == "failed" or row.failure_code:
        view.failure.CopyFrom(types.Failure(code=row.failure_code, message=row.failure_message))
    if with_content:
        if row.transcript is not None:
            view.transcript.CopyFrom(
                types.Transcript(
                    language=row.language,
                    duration_ms=row.duration_ms,
                    segments=[
                        types.TranscriptSegment(
                            start_ms=segment["start_ms"],
                            end_ms=segment["end_ms"],
                            text=segment["text"],
                            speaker=_SPEAKER_FROM_NAME.get(segment["speaker"], types.SPEAKER_UNSPECIFIED),
                            confidence=segment["confidence"],
                        )
                        for segment in row.transcript
                    ],
                )
            )
        view.sections.extend(
            types.NoteSection(
                id=section["id"],
                label=section["label"],
                title=section["title"],
                content=section["content"],
                order=section["order"],
                source_segments=section["source_segments"],
                version=section.get("version", 1),
                edited=section.get("edited", False),
                sentences=[
                    types.SentenceRef(
                        text=sentence["text"],
                        source_segments=sentence["source_segments"],
                        start_ms=sentence["start_ms"],
                        end_ms=sentence["end_ms"],
                    )
                    for sentence in section.get("sentences") or []
                ],
            )
            for section in row.sections or []
        )
        if row.structured:
            view.structured.update(row.structured)
        view.revision = row.revision or 0
    return view


def document_from_view(view: pb.NoteView) -> export.NoteDocument:
    """What an exported document shows of a note."""
    return export.NoteDocument(
        note_id=view.note_id,
        name=view.info.name,
        gender=view.info.gender,
        external_id=view.info.external_id,
        language=view.language or view.transcript.language,
        created_at=from_timestamp(view.created_at),
        updated_at=from_timestamp(view.updated_at),
        metadata=[(item.key, item.value) for item in view.info.metadata],
        sections=[
            export.ExportSection(title=section.title, label=section.label, content=section.content, order=section.order)
            for section in sorted(view.sections, key=lambda section: section.order)
        ],
    )


def _fallback_status(upload: ingestion_pb2.Upload) -> int:
    """Status of a note known to ingestion but not yet projected.

    Ingestion may already know the run ended (the read model is replaying after a restart), but
    the outcome's content (transcript, sections) is not readable here yet: until it is, the note
    is reported as still processing rather than completed without a note.
    """
    if upload.status in (types.NOTE_STATUS_UNSPECIFIED, types.NOTE_STATUS_PENDING):
        return types.NOTE_STATUS_PENDING
    return types.NOTE_STATUS_PROCESSING


def _upload_view(upload: ingestion_pb2.Upload) -> pb.NoteView:
    """What ingestion knows of a note the projection has not seen yet."""
    return pb.NoteView(
        note_id=upload.note_id,
        tenant_id=upload.tenant_id,
        info=upload.note,
        status=_fallback_status(upload),
        created_at=upload.created_at,
        updated_at=upload.created_at,
        run=upload.run,
        progress=0.0,
    )


def _parse_date(value: str, field: str) -> dt.date | None:
    if not value:
        return None
    # fromisoformat alone would also take "20240101" and "2024-W01-1".
    if not _DATE.fullmatch(value):
        raise _validation(f"{field} must be a date as YYYY-MM-DD", field)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _validation(f"{field} is not a valid date", field) from None


def _start_of_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


class NoteReader:
    """The reads behind the gRPC API, with read-your-writes for notes not projected yet."""

    def __init__(
        self,
        settings: QuerySettings,
        session_maker: async_sessionmaker[AsyncSession],
        ingestion: ingestion_pb2_grpc.IngestionServiceStub | None,
        lag_source: LagSource | None,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.ingestion = ingestion
        self.lag_source = lag_source

    async def gauges(self) -> list[Sample]:
        """Notes in the read model by status, for /metrics (async transcription requests are not notes)."""
        async with self.session_maker() as session:
            query = select(NoteRow.status, func.count()).where(NoteRow.kind != types.REQUEST_KIND_TRANSCRIPTION)
            counts = dict((await session.execute(query.group_by(NoteRow.status))).all())
        statuses = dict.fromkeys(("pending", "processing", "completed", "failed"), 0) | counts
        return [("scribe_notes", {"status": status}, count) for status, count in statuses.items()]

    # -- single notes --------------------------------------------------------------------------

    async def get_note(self, tenant_id: str, note_id: str) -> pb.NoteView:
        """The full view of a note, transcript and sections included."""
        self._require_ids(tenant_id, note_id)
        row = await self._full_row(note_id)
        if row is None:
            await self._raise_if_deleted(note_id)
            found = await self._await_projection(tenant_id, note_id)
            if isinstance(found, ingestion_pb2.Upload):
                return _upload_view(found)
            row = await self._full_row(note_id)
            if row is None:  # projected and gone again: only a deleted note does that
                raise _not_found()
        if row.tenant_id != tenant_id:
            raise _access_denied()
        return _note_view(row, with_content=True)

    async def get_async_transcription(self, tenant_id: str, request_id: str) -> str:
        """Seed 002's answer for an async transcription request, as JSON (the webhook's body too).

        Another tenant's request, or a note that is not a transcription request, is not found.
        """
        self._require_ids(tenant_id, request_id)
        row = await self._full_row(request_id)
        if row is None:
            try:
                found = await self._await_projection(tenant_id, request_id)
            except ServiceError as exc:
                if exc.status in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
                    raise _request_not_found() from None
                raise
            if isinstance(found, ingestion_pb2.Upload):
                if found.note.kind != types.REQUEST_KIND_TRANSCRIPTION:
                    raise _request_not_found()
                body = webhooks.async_transcription_body(found.note_id, found.note.client_request_id, "pending")
                return webhooks.dump(body)
            row = await self._full_row(request_id)
        if row is None or row.tenant_id != tenant_id or row.kind != types.REQUEST_KIND_TRANSCRIPTION:
            raise _request_not_found()
        return webhooks.dump(webhooks.async_transcription_body(row.note_id, row.client_request_id, row.status, row))

    async def export_note(self, tenant_id: str, note_id: str, fmt: str) -> pb.ExportNoteResponse:
        """A completed note as a document (TXT or RTF); FAILED_PRECONDITION NOTE_NOT_READY before."""
        if fmt not in export.FORMATS:
            raise _validation(f"format must be one of {', '.join(export.FORMATS)}", "format")
        view = await self.get_note(tenant_id, note_id)
        if view.status != types.NOTE_STATUS_COMPLETED:
            status = STATUS_FROM_PROTO.get(view.status, "pending")
            details: dict[str, Any] = {"status": status}
            if view.status == types.NOTE_STATUS_FAILED:
                details["failure"] = {"code": view.failure.code, "message": view.failure.message}
                message = "The note failed; there is no note to export"
            else:
                message = "The note is not ready yet; export it once its status is completed"
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "NOTE_NOT_READY", message, details)
        content, content_type, filename = export.render(document_from_view(view), fmt)
        return pb.ExportNoteResponse(content=content, content_type=content_type, filename=filename)

    async def get_status(self, tenant_id: str, note_id: str) -> pb.GetNoteStatusResponse:
        """A note's status; one primary-key lookup of two columns, as thousands of clients poll it."""
        self._require_ids(tenant_id, note_id)
        found: _StatusRow | ingestion_pb2.Upload | None = await self._status_row(note_id)
        if found is None:
            await self._raise_if_deleted(note_id)
            found = await self._await_projection(tenant_id, note_id)
        if isinstance(found, ingestion_pb2.Upload):
            status = _fallback_status(found)
            attempt = found.run.attempt or 1
        else:
            if found.tenant_id != tenant_id:
                raise _access_denied()
            status = STATUS_TO_PROTO.get(found.status, types.NOTE_STATUS_UNSPECIFIED)
            attempt = found.attempt
        return pb.GetNoteStatusResponse(status=status, valid=status != types.NOTE_STATUS_FAILED, attempt=attempt)

    @staticmethod
    def _require_ids(tenant_id: str, note_id: str) -> None:
        if not tenant_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
        if not note_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NOTE_ID", "note_id is required")

    async def _raise_if_deleted(self, note_id: str) -> None:
        """NOT_FOUND at once for a deleted note, without waiting for a projection that won't come."""
        async with self.session_maker() as session:
            if await is_deleted(session, DELETED_NOTES, note_id):
                raise _not_found()

    async def _full_row(self, note_id: str) -> NoteRow | None:
        async with self.session_maker() as session:
            return await session.get(NoteRow, note_id)

    async def _status_row(self, note_id: str) -> _StatusRow | None:
        async with self.session_maker() as session:
            row = (
                await session.execute(
                    select(NoteRow.tenant_id, NoteRow.status, NoteRow.attempt).where(NoteRow.note_id == note_id)
                )
            ).first()
        return None if row is None else _StatusRow(row.tenant_id, row.status, row.attempt)

    async def _await_projection(self, tenant_id: str, note_id: str) -> _StatusRow | ingestion_pb2.Upload:
        """For a note the projection does not know: its row once projected, or ingestion's upload.

        Raises NOT_FOUND (or ingestion's PERMISSION_DENIED) when the note does not exist for the
        caller. Bounded by ``read_your_writes_wait_s`` overall.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_your_writes_wait_s
        if self.ingestion is not None:
            try:
                response = await self.ingestion.GetUpload(
                    ingestion_pb2.GetUploadRequest(tenant_id=tenant_id, note_id=note_id),
                    timeout=max(deadline - loop.time(), 0.2),
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise _not_found() from None
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    raise _access_denied() from None
                log.warning("read-your-writes: ingestion answered %s; relying on consumer lag", exc.code().name)
            else:
                return await self._poll_projection(note_id, deadline) or response.upload
        return await self._wait_while_lagging(note_id, deadline)

    async def _poll_projection(self, note_id: str, deadline: float) -> _StatusRow | None:
        """The note's row as soon as the projection has it, or None at the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            row = await self._status_row(note_id)
            if row is not None or loop.time() >= deadline:
                return row
            await asyncio.sleep(min(READ_YOUR_WRITES_POLL_S, max(deadline - loop.time(), 0)))

    async def _wait_while_lagging(self, note_id: str, deadline: float) -> _StatusRow:
        """Without ingestion's word, the note may still be in the consumer's backlog: wait for it
        while there is a backlog (or while the lag is unknown), up to the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            row = await self._status_row(note_id)
            if row is not None:
                return row
            if loop.time() >= deadline:
                raise _not_found()
            lags = await self.lag_source.lag_by_partition() if self.lag_source is not None else {}
            if lags and sum(lags.values()) == 0:
                # Caught up: one last look, as the event may have landed since the lookup above.
                row = await self._status_row(note_id)
                if row is not None:
                    return row
                raise _not_found()
            await asyncio.sleep(min(READ_YOUR_WRITES_POLL_S, max(deadline - loop.time(), 0)))

    # -- lists ---------------------------------------------------------------------------------

    async def list_notes(self, request: pb.ListNotesRequest) -> pb.ListNotesResponse:
        """One page of a tenant's notes, newest first, with the total count of matching notes."""
        if not request.tenant_id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "tenant_id is required")
        # proto3 cannot tell 0 from unset: 0 means the API's defaults (page 1, 10 per page).
        page = request.page or 1
        limit = request.limit or DEFAULT_LIMIT
        if page < 1:
            raise _validation("page must be 1 or more", "page")
        if not 1 <= limit <= MAX_LIMIT:
            raise _validation(f"limit must be between 1 and {MAX_LIMIT}", "limit")
        conditions = [NoteRow.tenant_id == request.tenant_id, NoteRow.kind == int(request.kind)]
        if request.status != types.NOTE_STATUS_UNSPECIFIED:
            status = STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise _validation("status is not a known note status", "status")
            conditions.append(NoteRow.status == status)
        name = search_key(request.name.strip())
        if name:
            # The name is matched literally: % and _ typed by a user are not wildcards.
            literal = _LIKE_SPECIALS.sub(r"\\\1", name)
            conditions.append(NoteRow.name_search.like(f"%{literal}%", escape="\\"))
        from_date = _parse_date(request.from_date, "from_date")
        to_date = _parse_date(request.to_date, "to_date")
        if from_date and to_date and from_date > to_date:
            raise _validation("from_date is after to_date", "from_date")
        if from_date:
            conditions.append(NoteRow.created_at >= _start_of_day(from_date))
        if to_date and to_date < dt.date.max:
            conditions.append(NoteRow.created_at < _start_of_day(to_date + dt.timedelta(days=1)))
        if request.days < 0:
            raise _validation("days must be 0 or more", "days")
        if request.days:
            try:
                conditions.append(NoteRow.created_at >= utcnow() - dt.timedelta(days=request.days))
            except OverflowError:
                pass  # further back than any date: no limit
        if request.external_id:
            conditions.append(NoteRow.external_id == request.external_id)

        async with self.session_maker() as session:
            total = await session.scalar(select(func.count()).select_from(NoteRow).where(*conditions))
            rows = (
                await session.execute(
                    select(*_LIST_COLUMNS)
                    .where(*conditions)
                    .order_by(NoteRow.created_at.desc(), NoteRow.note_id.desc())
                    .offset((page - 1) * limit)
                    .limit(limit)
                )
            ).all()
        return pb.ListNotesResponse(
            notes=[_note_view(row, with_content=False) for row in rows], total=total or 0, page=page, limit=limit
        )
