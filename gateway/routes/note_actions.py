"""What a client does to an existing note: retry it, export it, edit one of its sections, delete it.

All are rate limited per key (seed 001's table) and scoped to the key's tenant. Each write
waits, bounded, until the query service shows its effect, so that a read right after the answer
sees it (a status poll after a retry says ``processing``, a GET after an edit shows the edit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import grpc
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from common.logs import log_context
from gateway.backends import Backends
from gateway.config import GatewaySettings
from gateway.dependencies import BackendStubs, NoteId, Settings
from gateway.errors import ApiError, invalid_note_id, validation_error
from gateway.ratelimit import Limited, LimitedEditor
from gateway.presenters import note_detail_from_view, status_name
from gateway.routes.notes import transcription_url
from gateway.schemas import (
    ErrorResponse,
    NoteDetailResponse,
    NoteSection,
    error_responses,
    with_rate_limit_headers,
)
from scribe.ingestion.v1 import ingestion_pb2
from scribe.notegen.v1 import notegen_pb2
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

log = logging.getLogger(__name__)

router = APIRouter(prefix="/notes/v1", tags=["notes"])

RETRY_MESSAGE = "Transcription retry initiated successfully"
# How long a write waits for the read model to show it before answering anyway.
READ_YOUR_WRITES_S = 3.0
POLL_S = 0.05
MAX_SECTION_CONTENT = 100_000
T = TypeVar("T")


async def _await_read_model(read: Callable[[], Awaitable[T]], shown: Callable[[T], bool]) -> tuple[T, bool]:
    """Read (bounded by READ_YOUR_WRITES_S) until the read model shows a write; the last answer and
    whether it showed it. A write is answered once it is committed; this only spares the client a
    stale read right after."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_YOUR_WRITES_S
    while True:
        answer = await read()
        if shown(answer):
            return answer, True
        if loop.time() >= deadline:
            return answer, False
        await asyncio.sleep(POLL_S)


def _json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 VALIDATION_ERROR for anything else."""
    try:
        data: Any = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise validation_error([{"loc": ("body",), "msg": "the body must be a JSON object"}])
    return data


def _get_note(backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str) -> Callable[[], Awaitable[query_pb2.GetNoteResponse]]:
    return lambda: backends.query.GetNote(
        query_pb2.GetNoteRequest(tenant_id=tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )


class RetryRequest(BaseModel):
    """Body of ``POST /transcripts/retry``."""

    note_id: str = Field(
        description="ID of the note to process again (UUID).",
        examples=["6a4fe1de-52c4-4b2b-a30f-4b3fa9d7d8b3"],
        json_schema_extra={"format": "uuid"},
    )


class RetryResult(BaseModel):
    """The answer of both retry endpoints, exactly as seed 000 documents it (no envelope)."""

    note_id: str = Field(examples=["6a4fe1de-52c4-4b2b-a30f-4b3fa9d7d8b3"])
    status: Literal["processing"] = Field(description="The note's new status, always processing.")
    message: str = Field(examples=[RETRY_MESSAGE])
    transcription: str = Field(description="URL where the new transcript will be served as text once done.")


class SectionUpdate(BaseModel):
    """Body of ``PATCH /note_sections``: the section's id and the fields to change."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(
        validation_alias=AliasChoices("id", "section_id"),
        description="The section's id (UUID), as in the note's note_sections.",
        json_schema_extra={"format": "uuid"},
    )
    title: str | None = Field(default=None, min_length=1, max_length=255)
    content: str | None = Field(default=None, max_length=MAX_SECTION_CONTENT)
    order: str | int | None = Field(default=None, description='Position of the section ("1"), 0 to 1000.')


class SectionMeta(BaseModel):
    note_id: str
    version: int = Field(description="Version of the section's content; every edit adds one.")
    edited: bool = Field(description="The content is a clinician's edit, kept over later regenerations.")


class SectionResponse(BaseModel):
    data: NoteSection
    meta: SectionMeta


_RETRY_ERRORS = with_rate_limit_headers(
    {
        **error_responses(401, 403, 404, 413, 429, 500, 503, 504),
        400: {
            "model": ErrorResponse,
            "description": "INVALID_NOTE_ID (missing, not a UUID, or a malformed body), or TRANSCRIPTION_IN_PROGRESS "
            "(the note is processing and cannot be retried until it ends)",
        },
    },
    200,
)


# -- retry -------------------------------------------------------------------------------------


async def _retry(request: Request, backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str) -> RetryResult:
    response = await backends.ingestion.RequestRetry(
        ingestion_pb2.RequestRetryRequest(tenant_id=tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    attempt = response.upload.run.attempt
    with log_context(note_id=note_id, tenant_id=tenant_id):
        log.info("retry accepted", extra={"attempt": attempt})
        await _await_attempt(backends, settings, tenant_id, note_id, attempt)
    return RetryResult(
        note_id=note_id,
        status="processing",
        message=RETRY_MESSAGE,
        transcription=transcription_url(request, settings, note_id),
    )


async def _await_attempt(backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str, attempt: int) -> None:
    """Wait (bounded) until the read model shows the new run, so a status poll says processing."""
    try:
        _, shown = await _await_read_model(
            lambda: backends.query.GetNoteStatus(
                query_pb2.GetNoteStatusRequest(tenant_id=tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
            ),
            lambda status: status.attempt >= attempt,
        )
    except grpc.aio.AioRpcError:
        return  # the retry is accepted; reads will catch up
    if not shown:
        log.warning("retry: the read model did not show the new run in time")


@router.post(
    "/notes/{note_id}/retry",
    response_model=RetryResult,
    summary="Process a note again (from failed, completed or pending)",
    responses=_RETRY_ERRORS,
)
async def retry_note(
    principal: LimitedEditor, note_id: NoteId, request: Request, backends: BackendStubs, settings: Settings
) -> RetryResult:
    """Start a new transcription and note of the stored audio. The body is empty. Refused with
    400 ``TRANSCRIPTION_IN_PROGRESS`` while the note is processing; of two concurrent retries of one
    note, one starts a run and the other is refused."""
    return await _retry(request, backends, settings, principal.tenant_id, note_id)


@router.post(
    "/transcripts/retry",
    response_model=RetryResult,
    summary="Process a note again, by note_id in the body (seed 000)",
    responses=_RETRY_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RetryRequest.model_json_schema()}},
        }
    },
)
async def retry_transcript(
    principal: LimitedEditor, request: Request, backends: BackendStubs, settings: Settings
) -> RetryResult:
    """Same as ``POST /notes/{noteId}/retry``, with ``{"note_id": "..."}`` as the JSON body."""
    note_id = _note_id_from_body(await request.body())
    return await _retry(request, backends, settings, principal.tenant_id, note_id)


def _note_id_from_body(body: bytes) -> str:
    """The body's note_id in canonical form; INVALID_NOTE_ID for a missing, malformed or non-UUID one."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise invalid_note_id() from None
    value = data.get("note_id") if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise invalid_note_id()
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid_note_id() from None


# -- deletion ----------------------------------------------------------------------------------


@router.delete(
    "/notes/{note_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a note: its audio, transcript, sections and edits",
    responses=with_rate_limit_headers(
        {
            204: {"description": "Deleted. Nothing of the note remains; reads of it answer 404 from now on."},
            **error_responses(400, 401, 403, 500, 503, 504),
            404: {
                "model": ErrorResponse,
                "description": "NOTE_NOT_FOUND: no such note, or it is already deleted (a second DELETE of a note "
                "answers 404)",
            },
        },
        204,
    ),
)
async def delete_note(principal: LimitedEditor, note_id: NoteId, backends: BackendStubs, settings: Settings) -> Response:
    """Delete the note for good: its stored audio, transcript, sections and their edit history, in
    every service. Another tenant's note answers 403 ``NOTE_ACCESS_DENIED`` and is left as it is.
    Not reversible; deleting again answers 404."""
    await backends.ingestion.DeleteNote(
        ingestion_pb2.DeleteNoteRequest(tenant_id=principal.tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    with log_context(note_id=note_id, tenant_id=principal.tenant_id):
        log.info("note deleted")
        await _await_deleted(backends, settings, principal.tenant_id, note_id)
    return Response(status_code=204)


async def _await_deleted(backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str) -> None:
    """Wait (bounded) until the read model no longer has the note, so a GET right after says 404."""

    async def gone() -> bool:
        try:
            await backends.query.GetNoteStatus(
                query_pb2.GetNoteStatusRequest(tenant_id=tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return True
            raise
        return False

    try:
        _, shown = await _await_read_model(gone, lambda answer: answer)
    except grpc.aio.AioRpcError:
        return  # the deletion is committed; reads will catch up
    if not shown:
        log.warning("deletion: the read model did not show it in time")


# -- export ------------------------------------------------------------------------------------


@router.get(
    "/notes/{note_id}/export",
    response_class=Response,
    summary="Download a completed note as RTF or TXT",
    responses=with_rate_limit_headers(
        {
            200: {
                "description": "The note as a document, sent as an attachment (Content-Disposition).",
                "content": {
                    "application/rtf": {"schema": {"type": "string", "format": "binary"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            **error_responses(400, 401, 403, 404, 429, 500, 503, 504),
            422: {
                "model": ErrorResponse,
                "description": "NOTE_NOT_READY: the note is not completed (details.status; details.failure when "
                "failed)",
            },
        },
        200,
    ),
)
async def export_note(
    principal: Limited,
    note_id: NoteId,
    backends: BackendStubs,
    settings: Settings,
    format: Annotated[Literal["txt", "rtf"], Query(description="Document format.")] = "txt",  # noqa: A002
) -> Response:
    """The note's sections under their titles (headings in RTF), with the patient's details."""
    response = await backends.query.ExportNote(
        query_pb2.ExportNoteRequest(tenant_id=principal.tenant_id, note_id=note_id, format=format),
        timeout=settings.rpc_timeout_s,
    )
    return Response(
        content=response.content,
        media_type=response.content_type,
        headers={"content-disposition": f'attachment; filename="{response.filename}"'},
    )


# -- section edits -----------------------------------------------------------------------------


@router.patch(
    "/note_sections",
    response_model=SectionResponse,
    summary="Edit one section of a note (content, title, order)",
    responses=with_rate_limit_headers(
        {
            **error_responses(401, 403, 413, 429, 500, 503, 504),
            400: {
                "model": ErrorResponse,
                "description": "VALIDATION_ERROR: no id, id not a UUID, nothing to change, or a field out of bounds",
            },
            404: {"model": ErrorResponse, "description": "SECTION_NOT_FOUND: no section with this id"},
        },
        200,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SectionUpdate.model_json_schema(by_alias=False)}},
        }
    },
)
async def update_section(
    principal: LimitedEditor, request: Request, backends: BackendStubs, settings: Settings
) -> SectionResponse:
    """A new version of the section; the edit stays the current content when the note is
    regenerated (the generated text is kept as history). 403 ``NOTE_ACCESS_DENIED`` for a section of
    another tenant's note."""
    update = _section_update(await request.body())
    rpc = notegen_pb2.UpdateSectionRequest(tenant_id=principal.tenant_id, section_id=update.id)
    if update.title is not None:
        rpc.title = update.title
    if update.content is not None:
        rpc.content = update.content
    if update.order is not None:
        rpc.order = _order(update.order)
    response = await backends.notegen.UpdateSection(rpc, timeout=settings.rpc_timeout_s)
    section = response.section
    with log_context(note_id=response.note_id, tenant_id=principal.tenant_id):
        log.info("section edited", extra={"label": section.label, "version": section.version})
        await _await_section(backends, settings, principal.tenant_id, response.note_id, section.id, section.version)
    return SectionResponse(
        data=NoteSection(
            id=section.id, title=section.title, label=section.label, content=section.content, order=str(section.order)
        ),
        meta=SectionMeta(note_id=response.note_id, version=section.version, edited=section.edited),
    )


def _section_update(body: bytes) -> SectionUpdate:
    try:
        update = SectionUpdate.model_validate(_json_object(body))
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    try:
        update.id = str(uuid.UUID(update.id))
    except ValueError:
        raise validation_error([{"loc": ("id",), "msg": "must be a UUID"}]) from None
    if update.title is None and update.content is None and update.order is None:
        raise validation_error([{"loc": ("body",), "msg": "nothing to change: give title, content or order"}])
    if update.title is not None and not update.title.strip():
        raise validation_error([{"loc": ("title",), "msg": "must not be blank"}])
    return update


def _order(value: str | int) -> int:
    try:
        order = int(str(value).strip())
    except ValueError:
        raise validation_error([{"loc": ("order",), "msg": "must be a whole number"}]) from None
    if not 0 <= order <= 1000:
        raise validation_error([{"loc": ("order",), "msg": "must be between 0 and 1000"}])
    return order


async def _await_section(
    backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str, section_id: str, version: int
) -> None:
    """Wait (bounded) until the read model shows this version of the section."""
    try:
        _, shown = await _await_read_model(
            _get_note(backends, settings, tenant_id, note_id),
            lambda response: any(s.id == section_id and s.version >= version for s in response.note.sections),
        )
    except grpc.aio.AioRpcError:
        return
    if not shown:
        log.warning("section edit: the read model did not show it in time")


# -- regeneration ------------------------------------------------------------------------------


class RegenerateRequest(BaseModel):
    """Body of ``POST /notes/{noteId}/regenerate`` (optional)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(
        default=None, max_length=2000, description='Free text for the generator, e.g. "shorter".'
    )
    generator: Literal["rules", "llm"] | None = Field(
        default=None, description="Which generator; default the deployment's (the LLM when configured)."
    )


@router.post(
    "/notes/{note_id}/regenerate",
    response_model=NoteDetailResponse,
    summary="Write a completed note again from its transcript",
    responses=with_rate_limit_headers(
        {
            **error_responses(400, 401, 403, 404, 413, 429, 500, 503, 504),
            422: {
                "model": ErrorResponse,
                "description": "NOTE_NOT_READY (the note is not completed) or TRANSCRIPT_TOO_SHORT",
            },
        },
        200,
    ),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RegenerateRequest.model_json_schema()}},
        }
    },
)
async def regenerate_note(
    principal: LimitedEditor, note_id: NoteId, request: Request, backends: BackendStubs, settings: Settings
) -> NoteDetailResponse:
    """A new revision of the note's sections (same or another generator, optional instructions).
    Sections a clinician edited stay as they are; the regenerated text is kept as their history."""
    body = _regenerate_body(await request.body())
    status = await backends.query.GetNoteStatus(
        query_pb2.GetNoteStatusRequest(tenant_id=principal.tenant_id, note_id=note_id), timeout=settings.rpc_timeout_s
    )
    if status.status != types.NOTE_STATUS_COMPLETED:
        raise ApiError(
            422,
            "NOTE_NOT_READY",
            "Only a completed note can be written again",
            {"status": status_name(status.status)},
        )
    response = await backends.notegen.RegenerateNote(
        notegen_pb2.RegenerateNoteRequest(
            tenant_id=principal.tenant_id,
            note_id=note_id,
            instructions=body.instructions or "",
            generator=body.generator or "",
        ),
        timeout=max(settings.rpc_timeout_s, 90.0),
    )
    view = await _await_revision(backends, settings, principal.tenant_id, note_id, response.revision)
    return NoteDetailResponse(
        data=note_detail_from_view(view, transcription_url(request, settings, note_id)),
        meta={"revision": response.revision, "generator": response.generator},
    )


def _regenerate_body(body: bytes) -> RegenerateRequest:
    if not body.strip():
        return RegenerateRequest()
    try:
        return RegenerateRequest.model_validate(_json_object(body))
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


async def _await_revision(
    backends: Backends, settings: GatewaySettings, tenant_id: str, note_id: str, revision: int
) -> query_pb2.NoteView:
    """The note once the read model shows ``revision`` (or as it is at the deadline)."""
    response, _ = await _await_read_model(
        _get_note(backends, settings, tenant_id, note_id), lambda response: response.note.revision >= revision
    )
    return response.note
