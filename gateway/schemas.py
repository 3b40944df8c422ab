"""Request and response bodies of the public Notes API v1 (seed 001's types, plus the detail).

The names are what each body is; the ``*Response`` models are the ``{data, meta}`` envelopes
the API answers, and ``ErrorResponse`` is the envelope of every error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NoteStatusName = Literal["pending", "processing", "completed", "failed"]
SpeakerName = Literal["doctor", "patient", "unspecified"]


class MetadataItem(BaseModel):
    """A client-defined key and value attached to a note."""

    key: str = Field(examples=["veterinario"])
    value: str = Field(examples=["Dr. Silva"])


class Note(BaseModel):
    """A note as lists and creation return it."""

    id: str = Field(examples=["550e8400-e29b-41d4-a716-446655440000"])
    name: str = Field(description="Patient's name.", examples=["Rex"])
    gender: str = Field(examples=["male"])
    transcription_status: NoteStatusName
    external_id: str = Field(description="The client's own id for the note.", examples=["CLIENTE_123"])
    metadata: list[MetadataItem]
    created_at: str = Field(description="ISO 8601 UTC, YYYY-MM-DDThh:mm:ssZ.", examples=["2024-02-14T18:25:43Z"])
    updated_at: str = Field(description="ISO 8601 UTC, YYYY-MM-DDThh:mm:ssZ.", examples=["2024-02-14T18:30:23Z"])


class NoteSection(BaseModel):
    """One section of the clinical note, in the consultation's language."""

    id: str
    title: str = Field(description="Localised title.", examples=["Anamnese"])
    label: str = Field(description="Stable, language-independent identifier.", examples=["anamnesis"])
    content: str
    order: str = Field(description="Position of the section, as a string.", examples=["1"])


class TranscriptItem(BaseModel):
    """One segment of the transcript: who said what, and when."""

    text: str
    speaker: SpeakerName
    start_time_ms: int
    end_time_ms: int


class Failure(BaseModel):
    """Why a note failed, in words a person can act on."""

    code: str = Field(examples=["NO_SPEECH"])
    message: str


class Provenance(BaseModel):
    """Where in the transcript something was said: segment indices and the time range."""

    source_segments: list[int] = Field(description="Indices into the note's transcript items.")
    start_time_ms: int
    end_time_ms: int


class SectionSentence(Provenance):
    text: str


class SectionProvenance(BaseModel):
    """The sentences of one generated section and where each came from (empty once edited)."""

    section_id: str
    label: str
    sentences: list[SectionSentence]


class Fact(Provenance):
    """One stated fact: its value (a number, or words), unit, and the words it was read from."""

    value: float | str | None
    unit: str | None = None
    text: str | None = None


class PatientFacts(BaseModel):
    name: Fact | None = None
    species: Fact | None = None
    breed: Fact | None = None
    sex: Fact | None = None
    age: Fact | None = None


class Vitals(BaseModel):
    weight_kg: Fact | None = None
    temperature_c: Fact | None = None
    heart_rate_bpm: Fact | None = None
    respiratory_rate_rpm: Fact | None = None


class Medication(Provenance):
    name: str
    drug: str | None = Field(default=None, description="Canonical drug key of the dose table, when known.")
    dose: float | None = None
    unit: str | None = None
    total_dose: float | None = None
    route: str | None = None
    frequency: str | None = Field(default=None, description="How often, in the words said.")
    interval_hours: float | None = None
    as_needed: bool = False
    continuous: bool = False
    duration_days: float | None = None
    text: str | None = None


class Diagnosis(Provenance):
    text: str
    status: Literal["stated", "suspected"]


class SafetyFlag(Provenance):
    """A dose or consistency problem found in the consultation; never silently corrected."""

    code: str = Field(examples=["dose_tenfold"])
    severity: str
    message: str
    medication: str | None = None


class StructuredNote(BaseModel):
    """The facts beside the prose, each traceable to the moment it was said."""

    patient: PatientFacts = Field(default_factory=PatientFacts)
    vitals: Vitals = Field(default_factory=Vitals)
    medications: list[Medication] = Field(default_factory=list)
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    follow_up_days: Fact | None = None
    flags: list[SafetyFlag] = Field(default_factory=list)


class NoteDetail(Note):
    """A note with its sections, transcript and outcome."""

    note_sections: list[NoteSection]
    transcription_url: str = Field(description="Absolute URL of the transcript as plain text.")
    transcript: list[TranscriptItem] = Field(description="Segments sorted by start time.")
    language: str | None = Field(description="Language of the consultation (ISO 639-1), once detected.")
    failure: Failure | None = Field(description="Set only when transcription_status is failed.")
    structured: StructuredNote | None = Field(
        default=None, description="Structured facts with provenance, once the note is generated."
    )
    provenance: list[SectionProvenance] = Field(
        default_factory=list, description="Per section: each generated sentence and where it was said."
    )


class StatusResult(BaseModel):
    """A note's status, cheap to poll."""

    status: NoteStatusName
    valid: bool = Field(description="True when the audio was usable and a note could be made from it.")


class PageMeta(BaseModel):
    """Pagination of a list."""

    total: int
    page: int
    limit: int
    total_pages: int


class NoteResponse(BaseModel):
    data: Note
    meta: dict[str, Any] = Field(default_factory=dict)


class NoteDetailResponse(BaseModel):
    data: NoteDetail
    meta: dict[str, Any] = Field(default_factory=dict)


class NoteListResponse(BaseModel):
    data: list[Note]
    meta: PageMeta


class StatusResponse(BaseModel):
    data: StatusResult
    meta: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The envelope of every error."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": "bad_request",
                "message": "Invalid audio format",
                "code": "INVALID_AUDIO_FORMAT",
                "details": {"expected": "audio/wav", "received": "audio/mp3"},
            }
        }
    )

    error: str = Field(description="Lowercase name of the HTTP status.", examples=["bad_request"])
    message: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="Stable machine-readable code.", examples=["INVALID_AUDIO_FORMAT"])
    details: dict[str, Any] = Field(default_factory=dict, description="Facts about the error, by code.")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="Each dependency and its state (serving).")


class NoteUploadForm(BaseModel):
    """The multipart form of ``POST /notes`` (documented; parsed after authentication)."""

    audio: bytes = Field(
        json_schema_extra={"format": "binary"},
        description="The consultation's audio (wav, mp3, m4a, ogg, webm, flac, aac).",
    )
    name: str | None = Field(default=None, description="Patient's name; default metadata's patient_name.")
    gender: str | None = None
    external_id: str | None = Field(default=None, description="The client's own id for the note.")
    metadata: str | None = Field(
        default=None,
        description='JSON: an object {"patient_name": "Rex", ...} or a list [{"key": ..., "value": ...}].',
    )
    language: str | None = Field(default=None, description="ISO 639-1 hint (pt, en, es); default detect.")
    callback_url: str | None = Field(
        default=None,
        description="http(s) URL the note's outcome is POSTed to, signed (see /webhooks/v1); "
        "default: the tenant's webhook URL, if any.",
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error envelope for each status."""
    descriptions = {
        400: "Invalid request (VALIDATION_ERROR, INVALID_NOTE_ID, INVALID_AUDIO_FORMAT, ...)",
        401: "API key missing, unknown, revoked or expired (UNAUTHORIZED)",
        403: "The key's role or tenant does not allow this (FORBIDDEN, NOTE_ACCESS_DENIED)",
        404: "No such note (NOTE_NOT_FOUND)",
        409: "The resource is not in a state that allows this",
        413: "Audio or request body larger than the limit (PAYLOAD_TOO_LARGE)",
        422: "Valid request, but processing failed (TRANSCRIPT_TOO_SHORT)",
        429: "Too many requests for this API key (RATE_LIMIT_EXCEEDED); Retry-After says how many seconds "
        "to wait, details.window which limit (minute or hour) was reached",
        500: "Internal error (INTERNAL_ERROR)",
        503: "A backend service is unavailable (SERVICE_UNAVAILABLE)",
        504: "A backend service did not answer in time (GATEWAY_TIMEOUT)",
    }
    return {status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses}


def with_rate_limit_headers(
    responses: dict[int | str, dict[str, Any]], success: int
) -> dict[int | str, dict[str, Any]]:
    """``responses`` with the rate-limit headers documented on the ``success`` and 429 answers.

    Every answer of a limited route carries them (its errors too, but for 401 and 403, answered
    before the key is counted); the 429 adds ``Retry-After``.
    """
    headers: dict[str, dict[str, Any]] = {}
    for window, limit, remaining in (("Minute", 100, 87), ("Hour", 1000, 912)):
        unit = window.lower()
        headers[f"X-RateLimit-Limit-{window}"] = {
            "description": f"Requests this API key may make per moving {unit}.",
            "schema": {"type": "integer", "example": limit},
        }
        headers[f"X-RateLimit-Remaining-{window}"] = {
            "description": f"Requests left to this API key in the moving {unit} (this one counted).",
            "schema": {"type": "integer", "example": remaining},
        }
        headers[f"X-RateLimit-Reset-{window}"] = {
            "description": f"When the oldest request counted in the {unit} leaves it, freeing a slot "
            "(Unix epoch seconds).",
            "schema": {"type": "integer", "example": 1642694400},
        }
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before the next request can succeed.",
            "schema": {"type": "integer", "minimum": 1, "example": 13},
        }
    }
    documented = {status: dict(entry) for status, entry in responses.items()}
    documented.setdefault(429, dict(error_responses(429)[429]))
    documented.setdefault(success, {})
    documented[success]["headers"] = {**documented[success].get("headers", {}), **headers}
    documented[429]["headers"] = {**documented[429].get("headers", {}), **headers, **retry_after}
    return documented
