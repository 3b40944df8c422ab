"""Seed 004's mobile-app API: a user's stored audio file processed in the background.

``POST /upload_audio/{user_id}`` stores a file (checked like any upload, not processed) and answers
its ``file_id``; ``POST /process_audio_v2/{user_id}?file_id=...`` starts a note from it and answers
at once ``{message, task_id}``; ``GET /get_audio_task/{task_id}`` answers the task's status and,
once done, the note. ``user_id`` is the client's own user id, scoped to the key's tenant: another
tenant (or another user) never sees the file. When the task cannot be dispatched (ingestion or its
database down) the answer is 500 in the error envelope, and nothing was created: the note and its
event are one transaction in ingestion.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from common.logs import log_context
from gateway.dependencies import BackendStubs, Settings
from gateway.errors import ApiError, from_grpc, payload_too_large, validation_error
from gateway.presenters import note_detail_from_view
from gateway.ratelimit import Limited, LimitedEditor
from gateway.routes.notes import transcription_url
from gateway.schemas import ErrorResponse, NoteDetail, error_responses, with_rate_limit_headers
from gateway.uploads import FORM_LIMITS, form_error
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

log = logging.getLogger(__name__)

router = APIRouter(tags=["process-audio"])

UPLOAD_PREFIX = "/upload_audio/"
STARTED = "Audio processing started in the background"
EXTENSION = re.compile(r"^[A-Za-z0-9]{1,8}$")
UserId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:-]+$", description="Your user's id.")
]
# Backend failures that mean the task could not be dispatched: the seed's 500.
_DISPATCH_FAILURES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}
_TASK_STATUS = {
    types.NOTE_STATUS_PENDING: "PENDING",
    types.NOTE_STATUS_PROCESSING: "STARTED",
    types.NOTE_STATUS_COMPLETED: "SUCCESS",
    types.NOTE_STATUS_FAILED: "FAILURE",
}


class StoredFileBody(BaseModel):
    file_id: str = Field(examples=["67890"])
    user_id: str
    file_name: str
    file_extension: str = Field(examples=["m4a"])
    size_bytes: int
    duration_ms: int


class UploadFileForm(BaseModel):
    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The recording (m4a, mp3, wav, ...).")


class ProcessAudioStarted(BaseModel):
    message: Literal["Audio processing started in the background"]
    task_id: str = Field(examples=["d91a4f0e-09f1-4c6f-bbde-8fcb7b0a8b7b"])


class TaskError(BaseModel):
    code: str = Field(examples=["NO_SPEECH"])
    message: str


class AudioTask(BaseModel):
    """A processing task: PENDING -> STARTED -> SUCCESS (with the note) or FAILURE (with why)."""

    task_id: str
    status: Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
    result: NoteDetail | None = Field(default=None, description="The note (SUCCESS only).")
    error: TaskError | None = Field(default=None, description="Why it failed (FAILURE only).")


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": UploadFileForm.model_json_schema()}},
    }
}


def _dispatch_failed() -> ApiError:
    return ApiError(500, "TASK_DISPATCH_FAILED", "The audio processing task could not be dispatched; nothing was started")


@router.post(
    UPLOAD_PREFIX + "{user_id}",
    status_code=201,
    response_model=StoredFileBody,
    summary="Store a user's audio file for processing; answers its file_id",
    responses=with_rate_limit_headers(error_responses(400, 401, 403, 413, 429, 500, 503, 504), 201),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_audio_file(
    principal: LimitedEditor, user_id: UserId, request: Request, backends: BackendStubs, settings: Settings
) -> StoredFileBody:
    try:
        form = await request.form(**FORM_LIMITS)
    except MultiPartException as exc:
        raise form_error(exc) from None
    try:
        audio = form.get("file") or form.get("audio")
        if not isinstance(audio, UploadFile):
            raise validation_error([{"loc": ("file",), "msg": "Field required: the audio file"}])
        if audio.size is not None and audio.size > settings.max_upload_bytes:
            raise payload_too_large(settings.max_upload_bytes)

        async def requests():
            yield pb.StoreFileRequest(
                metadata=pb.FileMetadata(
                    tenant_id=principal.tenant_id,
                    user_id=user_id,
                    filename=(audio.filename or "")[:255],
                    content_type=audio.content_type or "",
                )
            )
            await audio.seek(0)
            while chunk := await audio.read(settings.upload_chunk_bytes):
                yield pb.StoreFileRequest(chunk=chunk)

        response = await backends.ingestion.StoreFile(requests(), timeout=settings.upload_timeout_s)
    finally:
        await form.close()
    stored = response.file
    name = stored.audio.filename
    return StoredFileBody(
        file_id=stored.file_id,
        user_id=stored.user_id,
        file_name=name,
        file_extension=stored.audio.blob_key.rsplit(".", 1)[-1],
        size_bytes=stored.audio.size_bytes,
        duration_ms=stored.audio.duration_ms,
    )


@router.post(
    "/process_audio_v2/{user_id}",
    response_model=ProcessAudioStarted,
    summary="Start processing a stored audio file in the background",
    responses=with_rate_limit_headers(
        {
            **error_responses(400, 401, 403, 404, 429),
            500: {
                "model": ErrorResponse,
                "description": "TASK_DISPATCH_FAILED: the task could not be dispatched (nothing was started)",
            },
        },
        200,
    ),
)
async def process_audio_v2(
    principal: LimitedEditor,
    user_id: UserId,
    backends: BackendStubs,
    settings: Settings,
    file_id: Annotated[str | None, Query(max_length=64, description="The stored file's id.")] = None,
    file_extension: Annotated[str, Query(description="The file's extension (m4a, mp3, ...).")] = "m4a",
    file_name: Annotated[str | None, Query(max_length=255, description="A name for the note.")] = None,
) -> ProcessAudioStarted:
    """Answers at once with the task id; poll ``GET /get_audio_task/{task_id}``."""
    if not file_id:
        raise validation_error([{"loc": ("file_id",), "msg": "Field required: the id of a stored file"}])
    if not EXTENSION.match(file_extension):
        raise validation_error([{"loc": ("file_extension",), "msg": "must be letters and digits, e.g. m4a"}])
    try:
        response = await backends.ingestion.ProcessFile(
            pb.ProcessFileRequest(tenant_id=principal.tenant_id, user_id=user_id, file_id=file_id, name=file_name or ""),
            timeout=settings.rpc_timeout_s,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _DISPATCH_FAILURES:
            log.warning("process_audio_v2 dispatch failed", extra={"grpc_status": exc.code().name})
            raise _dispatch_failed() from None
        raise from_grpc(exc) from None
    task_id = response.upload.note_id
    with log_context(note_id=task_id, tenant_id=principal.tenant_id):
        log.info("audio task dispatched")
    return ProcessAudioStarted(message=STARTED, task_id=task_id)


@router.get(
    "/get_audio_task/{task_id}",
    response_model=AudioTask,
    response_model_exclude_none=True,
    summary="A processing task's status and, once done, the note",
    responses=with_rate_limit_headers(error_responses(400, 401, 403, 404, 429, 500, 503, 504), 200),
)
async def get_audio_task(
    principal: Limited, task_id: Annotated[str, Path(max_length=64)], request: Request, backends: BackendStubs,
    settings: Settings,
) -> dict[str, Any]:
    try:
        canonical = str(uuid.UUID(task_id))
    except ValueError:
        raise ApiError(400, "INVALID_TASK_ID", "Invalid task id format") from None
    answer = await backends.query.GetNote(
        query_pb2.GetNoteRequest(tenant_id=principal.tenant_id, note_id=canonical), timeout=settings.rpc_timeout_s
    )
    view = answer.note
    status = _TASK_STATUS.get(view.status, "PENDING")
    task: dict[str, Any] = {"task_id": canonical, "status": status}
    if status == "SUCCESS":
        task["result"] = note_detail_from_view(view, transcription_url(request, settings, canonical))
    elif status == "FAILURE":
        task["error"] = {"code": view.failure.code or "FAILED", "message": view.failure.message}
    return task
