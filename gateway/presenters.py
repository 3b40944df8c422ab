"""From the services' protobuf messages to the public API's bodies and the transcript's text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.schemas import (
    Failure,
    MetadataItem,
    Note,
    NoteDetail,
    NoteSection,
    NoteStatusName,
    SectionProvenance,
    SectionSentence,
    StructuredNote,
    SpeakerName,
    StatusResult,
    TranscriptItem,
)
from scribe.ingestion.v1 import ingestion_pb2
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

STATUS_NAMES: dict[int, NoteStatusName] = {
    types.NOTE_STATUS_PENDING: "pending",
    types.NOTE_STATUS_PROCESSING: "processing",
    types.NOTE_STATUS_COMPLETED: "completed",
    types.NOTE_STATUS_FAILED: "failed",
}
STATUS_VALUES: dict[NoteStatusName, int] = {name: value for value, name in STATUS_NAMES.items()}
SPEAKER_NAMES: dict[int, SpeakerName] = {
    types.SPEAKER_DOCTOR: "doctor",
    types.SPEAKER_PATIENT: "patient",
    types.SPEAKER_UNSPECIFIED: "unspecified",
}


def status_name(status: int) -> NoteStatusName:
    """The public name of a note status; an unset status reads as pending (audio stored)."""
    return STATUS_NAMES.get(status, "pending")


def iso_utc(ts: Timestamp) -> str | None:
    """``YYYY-MM-DDThh:mm:ssZ``, or None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _metadata(items: Any) -> list[MetadataItem]:
    return [MetadataItem(key=item.key, value=item.value) for item in items]


def note_from_upload(upload: ingestion_pb2.Upload) -> Note:
    """The Note answered by ``POST /notes``, from what ingestion stored."""
    created = iso_utc(upload.created_at) or ""
    return Note(
        id=upload.note_id,
        name=upload.note.name,
        gender=upload.note.gender,
        transcription_status=status_name(upload.status),
        external_id=upload.note.external_id,
        metadata=_metadata(upload.note.metadata),
        created_at=created,
        updated_at=created,
    )


def note_from_view(view: query_pb2.NoteView) -> Note:
    """The Note of a list item, from the query service's read model."""
    created = iso_utc(view.created_at) or ""
    return Note(
        id=view.note_id,
        name=view.info.name,
        gender=view.info.gender,
        transcription_status=status_name(view.status),
        external_id=view.info.external_id,
        metadata=_metadata(view.info.metadata),
        created_at=created,
        updated_at=iso_utc(view.updated_at) or created,
    )


def has_transcript(view: query_pb2.NoteView) -> bool:
    """Whether the note's transcript has been made (it may be empty of speech only when completed)."""
    if not view.HasField("transcript"):
        return False
    transcript = view.transcript
    return bool(transcript.segments or transcript.language or transcript.duration_ms) or (
        view.status == types.NOTE_STATUS_COMPLETED
    )


def _segments(view: query_pb2.NoteView) -> list[types.TranscriptSegment]:
    return sorted(view.transcript.segments, key=lambda segment: (segment.start_ms, segment.end_ms))


def note_detail_from_view(view: query_pb2.NoteView, transcription_url: str) -> NoteDetail:
    """The detail of one note: sections in order, transcript sorted by start, failure if failed."""
    note = note_from_view(view)
    failed = view.status == types.NOTE_STATUS_FAILED
    sections = sorted(view.sections, key=lambda section: section.order)
    return NoteDetail(
        **note.model_dump(),
        note_sections=[
            NoteSection(
                id=section.id,
                title=section.title,
                label=section.label,
                content=section.content,
                order=str(section.order),
            )
            for section in sections
        ],
        transcription_url=transcription_url,
        transcript=[
            TranscriptItem(
                text=segment.text.strip(),
                speaker=SPEAKER_NAMES.get(segment.speaker, "unspecified"),
                start_time_ms=segment.start_ms,
                end_time_ms=segment.end_ms,
            )
            for segment in _segments(view)
        ],
        language=view.language or view.transcript.language or None,
        failure=(
            Failure(code=view.failure.code or "FAILED", message=view.failure.message or "Processing failed")
            if failed
            else None
        ),
        structured=structured_from_proto(view.structured) if view.HasField("structured") else None,
        provenance=provenance_from_sections(sections),
    )


def _public_times(value: Any) -> Any:
    """Internal ``start_ms``/``end_ms`` keys as the public API's ``start_time_ms``/``end_time_ms``."""
    if isinstance(value, dict):
        renamed = {"start_ms": "start_time_ms", "end_ms": "end_time_ms"}
        return {renamed.get(key, key): _public_times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_public_times(item) for item in value]
    return value


def structured_from_proto(structured: Any) -> StructuredNote:
    """The structured facts of a note (a protobuf Struct) as the public model."""
    return StructuredNote.model_validate(_public_times(json_format.MessageToDict(structured)))


def provenance_from_sections(sections: Any) -> list[SectionProvenance]:
    """Each section's sentences with where they were said (sections edited by a person have none)."""
    return [
        SectionProvenance(
            section_id=section.id,
            label=section.label,
            sentences=[
                SectionSentence(
                    text=sentence.text,
                    source_segments=list(sentence.source_segments),
                    start_time_ms=sentence.start_ms,
                    end_time_ms=sentence.end_ms,
                )
                for sentence in section.sentences
            ],
        )
        for section in sections
    ]


def status_result(response: query_pb2.GetNoteStatusResponse) -> StatusResult:
    """The body of ``GET /notes/{id}/status``."""
    return StatusResult(status=status_name(response.status), valid=response.valid)


def _clock(ms: int) -> str:
    tenths = max(ms, 0) // 100
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    seconds, tenth = divmod(rest, 10)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}.{tenth}"
    return f"{minutes:02d}:{seconds:02d}.{tenth}"


def transcript_text(view: query_pb2.NoteView) -> str:
    """The transcript as plain text, one line per segment: ``[00:01.2] doctor: text``."""
    lines = [
        f"[{_clock(segment.start_ms)}] {SPEAKER_NAMES.get(segment.speaker, 'unspecified')}: {segment.text.strip()}"
        for segment in _segments(view)
    ]
    return "".join(f"{line}\n" for line in lines)
