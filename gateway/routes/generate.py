"""``POST /generate-note``: a transcript in (seed 002's items, from Scribe or any other system),
the structured note out, synchronously, in the Notes API's note shape. Nothing is stored."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from gateway.dependencies import BackendStubs, Settings
from gateway.ratelimit import Limited
from gateway.presenters import provenance_from_sections, structured_from_proto
from gateway.schemas import (
    ErrorResponse,
    NoteSection,
    SectionProvenance,
    SpeakerName,
    StructuredNote,
    error_responses,
    with_rate_limit_headers,
)
from scribe.notegen.v1 import notegen_pb2
from scribe.types.v1 import types_pb2 as types

router = APIRouter(tags=["notes"])

_SPEAKERS = {"doctor": types.SPEAKER_DOCTOR, "patient": types.SPEAKER_PATIENT, "unspecified": types.SPEAKER_UNSPECIFIED}
MAX_ITEMS = 10_000
MAX_TEXT = 10_000


class TranscriptItemIn(BaseModel):
    """One transcript item, as seed 002 defines it."""

    text: str = Field(max_length=MAX_TEXT, examples=["Also, I'm allergic to peanuts."])
    speaker: SpeakerName = Field(default="unspecified", description="Who said it.")
    start_time_ms: int = Field(ge=0, le=86_400_000, examples=[65100])
    end_time_ms: int = Field(ge=0, le=86_400_000, examples=[69300])

    @model_validator(mode="after")
    def _ordered(self) -> TranscriptItemIn:
        if self.end_time_ms < self.start_time_ms:
            raise ValueError("end_time_ms must not be before start_time_ms")
        return self


class GenerateNoteRequest(BaseModel):
    transcript: list[TranscriptItemIn] = Field(max_length=MAX_ITEMS)
    language: Literal["pt", "en", "es"] | None = Field(
        default=None, description="Language of the transcript; guessed from its words when absent."
    )
    domain: Literal["veterinary", "human"] | None = Field(default=None, description="Default: the deployment's.")


class GeneratedNoteBody(BaseModel):
    language: str
    generator: str = Field(description="Which generator wrote the note (rules-v1, or an LLM's).")
    note_sections: list[NoteSection]
    structured: StructuredNote | None = Field(description="Structured facts with provenance.")
    provenance: list[SectionProvenance] = Field(description="Per section: each sentence and where it was said.")


class GeneratedNoteResponse(BaseModel):
    data: GeneratedNoteBody
    meta: dict = Field(default_factory=dict)


@router.post(
    "/generate-note",
    response_model=GeneratedNoteResponse,
    summary="Write a note from a transcript, synchronously (nothing is stored)",
    responses=with_rate_limit_headers(
        {
            **error_responses(400, 401, 413, 429, 500, 503, 504),
            422: {
                "model": ErrorResponse,
                "description": "TRANSCRIPT_TOO_SHORT: \"We can't generate the note when the transcript is too short\"",
            },
        },
        200,
    ),
)
async def generate_note(
    principal: Limited, body: GenerateNoteRequest, backends: BackendStubs, settings: Settings
) -> GeneratedNoteResponse:
    """Transcript items (any order; sorted by start) in, the note's sections out."""
    items = sorted(body.transcript, key=lambda item: (item.start_time_ms, item.end_time_ms))
    transcript = types.Transcript(
        language=body.language or "",
        duration_ms=max((item.end_time_ms for item in items), default=0),
        segments=[
            types.TranscriptSegment(
                start_ms=item.start_time_ms, end_ms=item.end_time_ms, text=item.text, speaker=_SPEAKERS[item.speaker]
            )
            for item in items
        ],
    )
    response = await backends.notegen.GenerateNote(
        notegen_pb2.GenerateNoteRequest(transcript=transcript, domain=body.domain or ""), timeout=settings.rpc_timeout_s
    )
    sections = sorted(response.sections, key=lambda section: section.order)
    return GeneratedNoteResponse(
        data=GeneratedNoteBody(
            language=response.language,
            generator=response.generator,
            note_sections=[
                NoteSection(
                    id=section.id, title=section.title, label=section.label, content=section.content,
                    order=str(section.order),
                )
                for section in sections
            ],
            structured=structured_from_proto(response.structured) if response.HasField("structured") else None,
            provenance=provenance_from_sections(sections),
        )
    )
