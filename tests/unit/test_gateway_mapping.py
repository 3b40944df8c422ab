"""The gateway's pure parts: gRPC-to-HTTP error mapping, presenters, the upload form, keys."""

from __future__ import annotations

import re

import grpc
import pytest

from common.grpc_errors import ServiceError
from gateway.errors import from_service_error, validation_error
from gateway.keys import Principal, Role, generate_api_key, hash_api_key, visible_prefix
from gateway.presenters import has_transcript, iso_utc, note_detail_from_view, transcript_text
from gateway.uploads import parse_metadata
from scribe.query.v1 import query_pb2
from scribe.types.v1 import types_pb2 as types

S = grpc.StatusCode


@pytest.mark.parametrize(
    "status, code, http, error",
    [
        (S.INVALID_ARGUMENT, "INVALID_AUDIO_FORMAT", 400, "bad_request"),
        (S.INVALID_ARGUMENT, "", 400, "bad_request"),
        (S.FAILED_PRECONDITION, "TRANSCRIPTION_IN_PROGRESS", 400, "bad_request"),
        (S.FAILED_PRECONDITION, "TRANSCRIPT_TOO_SHORT", 422, "unprocessable_entity"),
        (S.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", 403, "forbidden"),
        (S.NOT_FOUND, "NOTE_NOT_FOUND", 404, "not_found"),
        (S.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE", 413, "payload_too_large"),
        (S.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", 429, "too_many_requests"),
        (S.ALREADY_EXISTS, "", 409, "conflict"),
        (S.DEADLINE_EXCEEDED, "", 504, "gateway_timeout"),
        (S.UNAVAILABLE, "", 503, "service_unavailable"),
        (S.INTERNAL, "BOOM", 500, "internal_error"),
        (S.UNKNOWN, "", 500, "internal_error"),
    ],
)
def test_grpc_status_and_code_map_to_http(status, code, http, error):
    mapped = from_service_error(ServiceError(status, code, "upstream says", {"field": "x"}))
    assert (mapped.status_code, mapped.error) == (http, error)
    body = mapped.body()
    assert set(body) == {"error", "message", "code", "details"}
    if http < 500:
        # The backend's code, message and details reach the client unchanged.
        assert body["code"] == (code or error.upper())
        assert body["message"] == "upstream says" and body["details"] == {"field": "x"}
    else:
        # Internals stay internal.
        assert body["message"] != "upstream says" and body["details"] == {}


def test_seed_error_bodies_are_reproduced_exactly():
    mapped = from_service_error(
        ServiceError(
            S.INVALID_ARGUMENT, "INVALID_AUDIO_FORMAT", "Invalid audio format",
            {"expected": "audio/wav", "received": "audio/mp3"},
        )
    )
    assert mapped.body() == {
        "error": "bad_request",
        "message": "Invalid audio format",
        "code": "INVALID_AUDIO_FORMAT",
        "details": {"expected": "audio/wav", "received": "audio/mp3"},
    }


def test_validation_error_names_the_fields():
    error = validation_error([
        {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 100"},
        {"loc": ("body", "metadata"), "msg": "bad"},
    ])
    assert error.status_code == 400 and error.code == "VALIDATION_ERROR"
    assert error.details == {"fields": {"limit": "Input should be less than or equal to 100", "metadata": "bad"}}


def _completed_view() -> query_pb2.NoteView:
    view = query_pb2.NoteView(
        note_id="550e8400-e29b-41d4-a716-446655440000",
        tenant_id="default",
        info=types.NoteInfo(name="Rex", gender="male", external_id="C1",
                            metadata=[types.MetadataItem(key="veterinario", value="Dr. Silva")]),
        status=types.NOTE_STATUS_COMPLETED,
        language="pt",
        transcript=types.Transcript(
            language="pt",
            duration_ms=3_725_000,
            segments=[
                types.TranscriptSegment(start_ms=3_723_400, end_ms=3_725_000, text=" Até logo.",
                                        speaker=types.SPEAKER_PATIENT),
                types.TranscriptSegment(start_ms=1_200, end_ms=3_000, text=" Bom dia.", speaker=types.SPEAKER_DOCTOR),
                types.TranscriptSegment(start_ms=65_000, end_ms=66_000, text="Hum.", speaker=types.SPEAKER_UNSPECIFIED),
            ],
        ),
        sections=[
            types.NoteSection(id="s2", label="anamnesis", title="Anamnese", content="...", order=2),
            types.NoteSection(id="s1", label="chief_complaint", title="Queixa principal", content="Tosse", order=1),
        ],
    )
    view.created_at.FromSeconds(1707935143)
    view.updated_at.FromSeconds(1707935423)
    return view


def test_transcript_text_has_one_line_per_segment_in_time_order():
    assert transcript_text(_completed_view()) == (
        "[00:01.2] doctor: Bom dia.\n"
        "[01:05.0] unspecified: Hum.\n"
        "[1:02:03.4] patient: Até logo.\n"
    )


def test_note_detail_matches_the_seed_types():
    detail = note_detail_from_view(_completed_view(), "https://x/notes/v1/notes/550e8400/transcript.txt").model_dump()
    assert detail["created_at"] == "2024-02-14T18:25:43Z" and detail["updated_at"] == "2024-02-14T18:30:23Z"
    assert detail["transcription_status"] == "completed" and detail["failure"] is None
    assert [(s["label"], s["order"]) for s in detail["note_sections"]] == [("chief_complaint", "1"), ("anamnesis", "2")]
    assert [item["start_time_ms"] for item in detail["transcript"]] == [1_200, 65_000, 3_723_400]
    assert detail["transcript"][0] == {"text": "Bom dia.", "speaker": "doctor", "start_time_ms": 1200,
                                       "end_time_ms": 3000}
    assert detail["language"] == "pt"


def test_failure_is_set_only_when_failed_and_transcript_presence_is_told():
    view = query_pb2.NoteView(note_id="n", status=types.NOTE_STATUS_FAILED,
                              failure=types.Failure(code="NO_SPEECH", message="No speech in the audio"))
    failure = note_detail_from_view(view, "u").failure
    assert failure is not None and failure.model_dump() == {"code": "NO_SPEECH", "message": "No speech in the audio"}
    assert not has_transcript(view)
    assert has_transcript(_completed_view())
    assert iso_utc(query_pb2.NoteView().created_at) is None


def test_metadata_object_and_list_forms():
    assert parse_metadata('{"patient_name": "Rex", "peso": 8, "castrado": false, "obs": null}') == [
        ("patient_name", "Rex"), ("peso", "8"), ("castrado", "false"), ("obs", ""),
    ]
    assert parse_metadata('[{"key": "vet", "value": "Dr. Silva"}, {"key": "n", "value": 2}]') == [
        ("vet", "Dr. Silva"), ("n", "2"),
    ]
    assert parse_metadata(None) == [] and parse_metadata("  ") == []
    for bad in ("{", "[1]", '"text"', '[{"value": "x"}]', '{"": "x"}', '[{"key": "a", "other": 1}]'):
        with pytest.raises(ValueError):
            parse_metadata(bad)


def test_keys_are_random_prefixed_and_hashed():
    key = generate_api_key()
    assert re.fullmatch(r"sk_live_[A-Za-z0-9_-]{32}", key)
    assert re.fullmatch(r"sk_test_[A-Za-z0-9_-]{32}", generate_api_key(live=False))
    assert generate_api_key() != key
    assert re.fullmatch(r"[0-9a-f]{64}", hash_api_key(key)) and hash_api_key(key) == hash_api_key(key)
    assert visible_prefix(key) == key[:12]


def test_roles_are_ordered():
    editor = Principal("t", Role.EDITOR, "k")
    assert editor.may(Role.VIEWER) and editor.may(Role.EDITOR) and not editor.may(Role.ADMIN)
    assert Principal("t", Role.ADMIN, "k").may(Role.EDITOR)
