"""Seed 002's async transcription: ``POST /transcribe-async`` (audio in, a request id out at once)
and ``GET /transcribe-async/{id}`` (``ongoing`` / ``failed`` / ``succeeded`` with the transcript).

The upload takes the Notes API's path (streamed to ingestion, transcribed from ``AudioIngested``)
marked ``REQUEST_KIND_TRANSCRIPTION``, so that no note is generated from it. The client's ``id`` is
an idempotency key per tenant: the same id with the same audio and parameters is the same request;
with anything else it is 409 IDEMPOTENCY_CONFLICT. Answers are the JSON the query service renders,
which is also the body of the request's webhook. Errors use the gateway's error envelope (the
seed defines no error body of its own).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from common.logs import log_context
from gateway.backends import Backends
from gateway.config import GatewaySettings
from gateway.dependencies import BackendStubs, Settings
from gateway.errors import ApiError, payload_too_large, validation_error
from gateway.ratelimit import Limited, LimitedEditor
from gateway.schemas import ErrorResponse, TranscriptItem, error_responses, with_rate_limit_headers
from gateway.uploads import FORM_LIMITS, form_error, upload_requests
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

log = logging.getLogger(__name__)

router = APIRouter(tags=["async transcription"])

PATH = "/transcribe-async"
MAX_CLIENT_ID = 128
MAX_CALLBACK_URL = 2048
LANGUAGE = re.compile(r"^[a-z]{2}$")
EXAMPLE_ID = "98FCE1EF-DBCA-41EF-8BC7-4D1621AC07C6"


class AsyncTranscriptionPayload(BaseModel):
    """``succeeded``: the transcript; ``failed``: why (``code``, ``message``)."""

    transcript: list[TranscriptItem] | None = Field(
        default=None, description="Sorted by start_time_ms (succeeded only)."
    )
    language: str | None = Field(default=None, description="Detected (or hinted) language (succeeded only).")
    code: str | None = Field(default=None, description="Why it failed (failed only).", examples=["NO_SPEECH"])
    message: str | None = Field(default=None, description="A reason a person can act on (failed only).")


class AsyncTranscription(BaseModel):
    """An asynchronous transcription request; the same JSON is POSTed to its webhook when it ends."""

    id: str = Field(description="The id of the asynchronous request.", examples=[EXAMPLE_ID.lower()])
    client_id: str | None = Field(
        default=None,
        max_length=MAX_CLIENT_ID,
        description="The client-made id sent with the request, when there was one.",
    )
    status: Literal["ongoing", "failed", "succeeded"]
    payload: AsyncTranscriptionPayload | None = Field(default=None, description="Set when failed or succeeded.")


class AsyncTranscriptionForm(BaseModel):
    """The multipart form of ``POST /transcribe-async``."""

    audio: bytes = Field(json_schema_extra={"format": "binary"}, description="The recording (wav, mp3, m4a, ogg...).")
    id: str | None = Field(
        default=None,
        max_length=MAX_CLIENT_ID,
        description="Optional unique client-made id: an idempotency key (same id and content: the same "
        "request; same id, other content: 409). Echoed as client_id. A random UUID is recommended.",
    )
    callback_url: str | None = Field(
        default=None, description="Optional http(s) URL the outcome is POSTed to (signed, see /webhooks/v1)."
    )
    language: str | None = Field(default=None, description="Optional ISO 639-1 hint (pt, en, es); default: detect.")


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": AsyncTranscriptionForm.model_json_schema()}},
    }
}


def _text(form, name: str) -> str:
    value = form.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise validation_error([{"loc": (name,), "msg": "must be a text field, not a file"}])
    return value.strip()


def _metadata(form, tenant_id: str) -> tuple[UploadFile, pb.UploadMetadata]:
    errors = []
    audio = form.get("audio")
    if audio is None:
        errors.append({"loc": ("audio",), "msg": "Field required"})
    elif not isinstance(audio, UploadFile):
        errors.append({"loc": ("audio",), "msg": "must be a file"})
    client_id, callback_url, language = _text(form, "id"), _text(form, "callback_url"), _text(form, "language").lower()
    if len(client_id) > MAX_CLIENT_ID:
        errors.append({"loc": ("id",), "msg": f"must be at most {MAX_CLIENT_ID} characters"})
    if callback_url and (len(callback_url) > MAX_CALLBACK_URL or not callback_url.startswith(("http://", "https://"))):
        errors.append({"loc": ("callback_url",), "msg": "must be an http:// or https:// URL"})
    if language and not LANGUAGE.match(language):
        errors.append({"loc": ("language",), "msg": "must be an ISO 639-1 code such as pt, en or es"})
    if errors or not isinstance(audio, UploadFile):
        raise validation_error(errors)
    metadata = pb.UploadMetadata(
        tenant_id=tenant_id,
        note=types.NoteInfo(
            kind=types.REQUEST_KIND_TRANSCRIPTION,
            client_request_id=client_id,
            callback_url=callback_url,
            language_hint=language,
        ),
        filename=(audio.filename or "")[:255],
        content_type=audio.content_type or "",
    )
    return audio, metadata


@router.post(
    PATH,
    status_code=202,
    response_model=AsyncTranscription,
    summary="Start an asynchronous transcription",
    responses=with_rate_limit_headers(
        {
            **error_responses(400, 401, 403, 413, 429, 500, 503, 504),
            409: {
                "model": ErrorResponse,
                "description": "IDEMPOTENCY_CONFLICT: this id was already used with different audio or parameters",
            },
        },
        202,
    ),
    openapi_extra=_UPLOAD_BODY,
)
async def start_async_transcription(
    principal: LimitedEditor, request: Request, backends: BackendStubs, settings: Settings
) -> JSONResponse:
    """Upload the audio; answers at once with the request's id and ``status: ongoing`` (a repeat of
    an earlier request with the same ``id`` and content answers that request's current state)."""
    try:
        form = await request.form(**FORM_LIMITS)
    except MultiPartException as exc:
        raise form_error(exc) from None
    try:
        audio, metadata = _metadata(form, principal.tenant_id)
        if audio.size is not None and audio.size > settings.max_upload_bytes:
            raise payload_too_large(settings.max_upload_bytes)
        response = await backends.ingestion.UploadAudio(
            upload_requests(metadata, audio, settings.upload_chunk_bytes), timeout=settings.upload_timeout_s
        )
    finally:
        await form.close()
    request_id = response.upload.note_id
    with log_context(note_id=request_id, tenant_id=principal.tenant_id):
        log.info("async transcription requested", extra={"replayed": response.replayed})
    if response.replayed:
        body = await _current(backends, settings, principal.tenant_id, request_id)
        return JSONResponse(body, status_code=202, headers={"Idempotent-Replayed": "true"})
    body = {"id": request_id}
    if metadata.note.client_request_id:
        body["client_id"] = metadata.note.client_request_id
    body["status"] = "ongoing"
    return JSONResponse(body, status_code=202)


async def _current(backends: Backends, settings: GatewaySettings, tenant_id: str, request_id: str) -> dict:
    answer = await backends.query.GetAsyncTranscription(
        query_pb2.GetAsyncTranscriptionRequest(tenant_id=tenant_id, request_id=request_id),
        timeout=settings.rpc_timeout_s,
    )
    return json.loads(answer.body_json)


@router.get(
    PATH + "/{request_id}",
    response_model=AsyncTranscription,
    response_model_exclude_none=True,
    summary="Get an asynchronous transcription",
    responses=with_rate_limit_headers(error_responses(400, 401, 404, 429, 500, 503, 504), 200),
)
async def get_async_transcription(
    principal: Limited,
    request_id: Annotated[str, Path(description="The id of the asynchronous request.", examples=[EXAMPLE_ID])],
    backends: BackendStubs,
    settings: Settings,
) -> JSONResponse:
    """Poll the status, and the transcript once ``succeeded``; right after the POST never 404."""
    try:
        canonical = str(uuid.UUID(request_id))
    except ValueError:
        raise ApiError(400, "INVALID_REQUEST_ID", "Invalid request id format") from None
    return JSONResponse(await _current(backends, settings, principal.tenant_id, canonical))
