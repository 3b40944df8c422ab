"""``POST /notes``'s multipart form, turned into ingestion's client-streaming ``UploadAudio`` call.

The form is parsed after the caller is authenticated (Starlette spools the file to disk past
1 MiB), then the audio goes to ingestion in chunks: never whole in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import FormData, UploadFile

from gateway.errors import ApiError, validation_error
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.types.v1 import types_pb2 as types

MAX_TEXT = 255
MAX_METADATA_ITEMS = 100
# Form limits: one file and a handful of short text fields is all the form has.
FORM_LIMITS: dict[str, int] = {"max_files": 1, "max_fields": 16, "max_part_size": 64 * 1024}
# What the form's text fields and multipart framing may add to the audio's size.
FORM_OVERHEAD_BYTES = 16 * FORM_LIMITS["max_part_size"]
LANGUAGE = re.compile(r"^[a-z]{2}$")


class NoteFields(BaseModel):
    """The form's text fields, validated."""

    name: str = Field(default="", max_length=MAX_TEXT)
    gender: str = Field(default="", max_length=32)
    external_id: str = Field(default="", max_length=MAX_TEXT)
    metadata: list[tuple[str, str]] = Field(default_factory=list, max_length=MAX_METADATA_ITEMS)
    language: str = ""
    callback_url: str = Field(default="", max_length=2048)

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, raw: Any) -> list[tuple[str, str]]:
        if isinstance(raw, list):
            return raw
        return parse_metadata(raw)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not LANGUAGE.match(value):
            raise ValueError("language must be an ISO 639-1 code such as pt, en or es")
        return value


def parse_metadata(raw: str | None) -> list[tuple[str, str]]:
    """The ``metadata`` field: a JSON object ``{"k": v}`` or a list of ``{key, value}``.

    Values that are not strings keep their JSON text (``8`` -> ``"8"``, ``true`` -> ``"true"``);
    null becomes an empty string.
    """
    if raw is None or not str(raw).strip():
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ValueError("metadata must be JSON: an object or a list of {key, value}") from None
    if isinstance(parsed, dict):
        pairs = list(parsed.items())
    elif isinstance(parsed, list):
        pairs = []
        for item in parsed:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or set(item) - {"key", "value"}:
                raise ValueError("each metadata item must be an object {key, value} with a string key")
            pairs.append((item["key"], item.get("value")))
    else:
        raise ValueError("metadata must be JSON: an object or a list of {key, value}")
    items = []
    for key, value in pairs:
        if not key.strip():
            raise ValueError("metadata keys must not be empty")
        items.append((key, _as_text(value)))
    return items


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation_error([{"loc": (name,), "msg": "must be a text field, not a file"}])
    return value


def read_form(form: FormData) -> tuple[UploadFile, NoteFields]:
    """The audio file and the validated fields; 400 VALIDATION_ERROR naming the bad fields."""
    audio = form.get("audio")
    errors: list[dict[str, Any]] = []
    if audio is None:
        errors.append({"loc": ("audio",), "msg": "Field required"})
    elif not isinstance(audio, UploadFile):
        errors.append({"loc": ("audio",), "msg": "must be a file"})
    raw = {
        name: _text_field(form, name)
        for name in ("name", "gender", "external_id", "metadata", "language", "callback_url")
    }
    try:
        fields = NoteFields.model_validate({key: value for key, value in raw.items() if value is not None})
    except ValidationError as exc:
        errors.extend(
            {"loc": error["loc"][:1], "msg": error["msg"].removeprefix("Value error, ")} for error in exc.errors()
        )
        fields = None
    if errors or fields is None or not isinstance(audio, UploadFile):
        raise validation_error(errors)
    if not fields.name:
        # The seed's own example names the patient only in metadata.
        fields.name = dict(fields.metadata).get("patient_name", "")[:MAX_TEXT]
    return audio, fields


def upload_metadata(tenant_id: str, audio: UploadFile, fields: NoteFields) -> pb.UploadMetadata:
    """The first message of the upload stream."""
    return pb.UploadMetadata(
        tenant_id=tenant_id,
        note=types.NoteInfo(
            name=fields.name,
            gender=fields.gender,
            external_id=fields.external_id,
            metadata=[types.MetadataItem(key=key, value=value) for key, value in fields.metadata],
            language_hint=fields.language,
            callback_url=fields.callback_url,
        ),
        filename=(audio.filename or "")[:MAX_TEXT],
        content_type=audio.content_type or "",
    )


async def upload_requests(
    metadata: pb.UploadMetadata, audio: UploadFile, chunk_bytes: int
) -> AsyncIterator[pb.UploadAudioRequest]:
    """The metadata, then the audio in chunks of ``chunk_bytes``."""
    yield pb.UploadAudioRequest(metadata=metadata)
    await audio.seek(0)
    while chunk := await audio.read(chunk_bytes):
        yield pb.UploadAudioRequest(chunk=chunk)


def form_error(exc: Exception) -> ApiError:
    """The 400 for a body that is not a well-formed multipart form within the limits."""
    return ApiError(400, "VALIDATION_ERROR", f"Invalid multipart form: {exc}", {"fields": {"body": str(exc)}})
