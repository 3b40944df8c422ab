"""The Notes API v1 under ``/notes/v1``: create a note from audio, list, detail, status, transcript.

Routes are thin: authenticate, call one backend, present the answer. A failed backend call
raises ``grpc.aio.AioRpcError``, which :mod:`gateway.errors` answers in the envelope.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.formparsers import MultiPartException

from common.logs import log_context
from gateway.backends import Backends
from gateway.config import GatewaySettings
from gateway.dependencies import BackendStubs, Caller, NoteId, Settings
from gateway.errors import ApiError, payload_too_large, validation_error
from gateway.presenters import (
    STATUS_VALUES,
    has_transcript,
    note_detail_from_view,
    note_from_upload,
    note_from_view,
    status_name,
    status_result,
    transcript_text,
)
from gateway.ratelimit import Limited, LimitedEditor
from gateway.schemas import (
    ErrorResponse,
    NoteDetailResponse,
    NoteListResponse,
    NoteResponse,
    NoteStatusName,
    NoteUploadForm,
    PageMeta,
    StatusResponse,
    error_responses,
    with_rate_limit_headers,
)
from gateway.uploads import FORM_LIMITS, form_error, read_form, upload_metadata, upload_requests
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

log = logging.getLogger(__name__)

router = APIRouter(prefix="/notes/v1", tags=["notes"])

TRANSCRIPT_ROUTE = "get_note_transcript"
# Strictly YYYY-MM-DD, as the contract says: pydantic's date would also take "0" or a datetime.
DAY = r"^\d{4}-\d{2}-\d{2}$"
# The form is parsed by hand, after authentication, so FastAPI cannot infer its schema.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": NoteUploadForm.model_json_schema()}},
    }
}


@router.post(
    "/notes",
    status_code=201,
    response_model=NoteResponse,
    summary="Create a note from a consultation's audio",
    responses=with_rate_limit_headers(error_responses(400, 401, 403, 413, 429, 500, 503, 504), 201),
    openapi_extra=_UPLOAD_BODY,
)
async def create_note(
    principal: LimitedEditor, request: Request, backends: BackendStubs, settings: Settings
) -> NoteResponse:
    """Upload the audio (multipart ``audio``) with the note's fields; the note starts ``pending``."""
    try:
        form = await request.form(**FORM_LIMITS)
    except MultiPartException as exc:
        raise form_error(exc) from None
    try:
        audio, fields = read_form(form)
        if audio.size is not None and audio.size > settings.max_upload_bytes:
            # The body limit leaves room for the form's framing; the audio itself gets the exact limit.
            raise payload_too_large(settings.max_upload_bytes)
        metadata = upload_metadata(principal.tenant_id, audio, fields)
        response = await backends.ingestion.UploadAudio(
            upload_requests(metadata, audio, settings.upload_chunk_bytes), timeout=settings.upload_timeout_s
        )
    finally:
        await form.close()
    note = note_from_upload(response.upload)
    with log_context(note_id=note.id, tenant_id=principal.tenant_id):
        log.info("note created", extra={"size_bytes": response.upload.audio.size_bytes})
    return NoteResponse(data=note)


@router.get(
    "/notes",
    response_model=NoteListResponse,
    summary="List notes, newest first, with filters",
    responses=with_rate_limit_headers(error_responses(400, 401, 429, 500, 503, 504), 200),
)
async def list_notes(
    principal: Limited,
    backends: BackendStubs,
    settings: Settings,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page, 1 to 100.")] = 10,
    transcription_status: Annotated[NoteStatusName | None, Query(description="Only notes in this status.")] = None,
    name: Annotated[str | None, Query(max_length=255, description="Partial match on the patient's name.")] = None,
    from_date: Annotated[str | None, Query(alias="from", pattern=DAY, description="Created on or after (UTC).")] = None,
    to_date: Annotated[str | None, Query(alias="to", pattern=DAY, description="Created on or before (UTC).")] = None,
    days: Annotated[int | None, Query(ge=1, le=36500, description="Only notes of the last N days.")] = None,
    external_id: Annotated[str | None, Query(max_length=255, description="Only notes with this external id.")] = None,
) -> NoteListResponse:
    """One page of the tenant's notes; ``meta`` carries the total and the page count."""
    first_day, last_day = _day(from_date, "from"), _day(to_date, "to")
    if first_day and last_day and first_day > last_day:
        raise validation_error([{"loc": ("from",), "msg": "from must not be after to"}])
    response = await backends.query.ListNotes(
        query_pb2.ListNotesRequest(
            tenant_id=principal.tenant_id,
            page=page,
            limit=limit,
            status=STATUS_VALUES[transcription_status] if transcription_status else types.NOTE_STATUS_UNSPECIFIED,
            name=name or "",
            from_date=first_day.isoformat() if first_day else "",
            to_date=last_day.isoformat() if last_day else "",
            days=days or 0,
            external_id=external_id or "",
        ),
        timeout=settings.rpc_timeout_s,
    )
    return NoteListResponse(
        data=[note_from_view(view) for view in response.notes],
        meta=PageMeta(
            total=response.total,
            page=page,
            limit=limit,
            total_pages=math.ceil(response.total / limit) if response.total else 0,
        ),
    )


def _day(value: str | None, field: str) -> dt.date | None:
    """A YYYY-MM-DD query value as a date (the pattern alone lets 2024-13-01 through)."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise validation_error([{"loc": (field,), "msg": "must be a real date, YYYY-MM-DD"}]) from None


async def _get_note(backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str) -> query_pb2.NoteView:
    response = await backends.query.GetNote(
        query_pb2.GetNoteRequest(tenant_id=tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    return response.note


@router.get(
    "/notes/{note_id}",
    response_model=NoteDetailResponse,
    summary="A note with its sections, transcript and outcome",
    responses=with_rate_limit_headers(error_responses(400, 401, 403, 404, 429, 500, 503, 504), 200),
)
async def get_note(
    principal: Limited, note_id: NoteId, request: Request, backends: BackendStubs, settings: Settings
) -> NoteDetailResponse:
    """The note's detail; right after its creation this never answers 404 (read-your-writes)."""
    view = await _get_note(backends, settings, principal.tenant_id, note_id)
    return NoteDetailResponse(data=note_detail_from_view(view, transcription_url(request, settings, note_id)))


@router.get(
    "/notes/{note_id}/status",
    response_model=StatusResponse,
    summary="A note's status, meant to be polled",
    responses=error_responses(400, 401, 403, 404, 500, 503, 504),
)
async def get_note_status(
    principal: Caller, note_id: NoteId, backends: BackendStubs, settings: Settings
) -> StatusResponse:
    """``status`` and ``valid`` (false when the note failed or its transcript was too short)."""
    response = await backends.query.GetNoteStatus(
        query_pb2.GetNoteStatusRequest(tenant_id=principal.tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    return StatusResponse(data=status_result(response))


@router.get(
    "/notes/{note_id}/transcript.txt",
    name=TRANSCRIPT_ROUTE,
    response_class=PlainTextResponse,
    summary="The transcript as plain text",
    responses=with_rate_limit_headers({
        200: {
            "content": {"text/plain": {"example": "[00:01.2] doctor: Bom dia, o que aconteceu com o Rex?\n"}},
            "description": "One line per segment: [mm:ss.d] speaker: text",
        },
        **error_responses(400, 401, 403, 404, 429, 500, 503, 504),
        422: {
            "model": ErrorResponse,
            "description": "No transcript yet (TRANSCRIPT_NOT_READY, while pending or processing) or never "
            "(TRANSCRIPT_UNAVAILABLE, the note failed before one was made; details.failure says why)",
        },
    }, 200),
)
async def get_note_transcript(
    principal: Limited, note_id: NoteId, backends: BackendStubs, settings: Settings
) -> PlainTextResponse:
    """One line per segment, ``[mm:ss.d] speaker: text``; 422 while there is no transcript."""
    view = await _get_note(backends, settings, principal.tenant_id, note_id)
    if not has_transcript(view):
        status = status_name(view.status)
        if view.status == types.NOTE_STATUS_FAILED:
            raise ApiError(
                422,
                "TRANSCRIPT_UNAVAILABLE",
                "The note failed before a transcript was made",
                {"status": status, "failure": {"code": view.failure.code, "message": view.failure.message}},
            )
        raise ApiError(422, "TRANSCRIPT_NOT_READY", "The transcript is not ready yet", {"status": status})
    return PlainTextResponse(
        transcript_text(view),
        headers={"content-disposition": f'inline; filename="{note_id}.txt"'},
    )


def transcription_url(request: Request, settings: GatewaySettings, note_id: str) -> str:
    """Absolute URL of a note's transcript: under ``public_base_url`` when set, else this request's."""
    if settings.public_base_url:
        path = router.url_path_for(TRANSCRIPT_ROUTE, note_id=note_id)
        return f"{settings.public_base_url}{path}"
    return str(request.url_for(TRANSCRIPT_ROUTE, note_id=note_id))
