"""The gateway over the real ingestion and query services, the real broker and SQLite.

Notegen and transcription are stood in for by health-only gRPC servers: the routes tested here
never call them, and /readyz only asks for their health.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from common.broker import free_port
from gateway.keys import Role
from tests.support.audio import write_tone
from tests.support.grpc_health import health_only_server
from tests.support.gateway import gateway_backends, TEST_API_KEY, gateway_settings, running_gateway

MAX_UPLOAD = 200_000
AUTH = {"X-API-KEY": TEST_API_KEY}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
NOTE_KEYS = {"id", "name", "gender", "transcription_status", "external_id", "metadata", "created_at", "updated_at"}
DETAIL_KEYS = NOTE_KEYS | {"note_sections", "transcription_url", "transcript", "language", "failure", "structured", "provenance"}
REPO = Path(__file__).resolve().parents[2]


# One set of backends for the whole module (their shutdown takes seconds); each test has its own
# gateway, and tests that count notes do it in a tenant of their own.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backends(tmp_path_factory: pytest.TempPathFactory, broker: str) -> AsyncIterator[dict[str, str]]:
    """Real ingestion and query (with a small upload limit), health-only notegen and transcription."""
    async with gateway_backends(tmp_path_factory.mktemp("backends"), broker, max_upload_bytes=MAX_UPLOAD) as addresses:
        yield addresses


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(tmp_path: Path, backends: dict[str, str]):
    """The app over those backends, with the same upload limit as ingestion."""
    settings = gateway_settings(tmp_path / "gateway", backends, max_upload_bytes=MAX_UPLOAD)
    async with running_gateway(settings) as (app, client):
        yield app, client


@pytest.fixture
def tone(tmp_path: Path) -> bytes:
    return write_tone(tmp_path / "tone.wav", seconds=1).read_bytes()


async def _upload(client: httpx.AsyncClient, audio: bytes, headers=AUTH, filename="consulta.wav",
                  content_type="audio/wav", **fields: str) -> httpx.Response:
    return await client.post(
        "/notes/v1/notes", headers=headers, files={"audio": (filename, audio, content_type)}, data=fields
    )


def _assert_error(response: httpx.Response, status: int, error: str, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "code", "details"}, body
    assert (body["error"], body["code"]) == (error, code), body
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text
    return body


# -- probes and plumbing ---------------------------------------------------------------------


async def test_healthz(gateway):
    _, client = gateway
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_every_backend_serves(gateway):
    _, client = gateway
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {name: "serving" for name in ("ingestion", "query", "notegen", "transcription", "database")},
    }


async def test_readyz_names_the_backend_that_is_down(tmp_path, backends):
    dead = f"127.0.0.1:{free_port()}"
    async with health_only_server(serving=False) as draining:
        settings = gateway_settings(tmp_path / "gw", {**backends, "transcription": dead, "notegen": draining})
        async with running_gateway(settings) as (_, client):
            response = await client.get("/readyz")
    body = _assert_error(response, 503, "service_unavailable", "NOT_READY")
    assert body["details"]["failing"] == ["notegen", "transcription"]
    assert body["details"]["checks"]["transcription"] == "unavailable"
    assert body["details"]["checks"]["notegen"] == "not_serving"
    assert body["details"]["checks"]["ingestion"] == "serving"


async def test_unknown_route_and_wrong_method_answer_the_envelope(gateway):
    _, client = gateway
    _assert_error(await client.get("/nope", headers=AUTH), 404, "not_found", "NOT_FOUND")
    _assert_error(await client.get("/notes/v1/nope", headers=AUTH), 404, "not_found", "NOT_FOUND")
    response = await client.delete("/notes/v1/notes", headers=AUTH)
    _assert_error(response, 405, "method_not_allowed", "METHOD_NOT_ALLOWED")
    assert response.headers["allow"]


async def test_unexpected_exception_is_a_500_envelope_without_trace(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", backends)
    async with running_gateway(settings) as (app, client):

        async def boom() -> None:
            raise RuntimeError("secret internals")

        app.add_api_route("/boom", boom)
        response = await client.get("/boom")
    body = _assert_error(response, 500, "internal_error", "INTERNAL_ERROR")
    assert body["details"] == {}
    assert "secret internals" not in response.text


async def test_backend_down_is_503(tmp_path, backends):
    settings = gateway_settings(tmp_path / "gw", {**backends, "query": f"127.0.0.1:{free_port()}"})
    async with running_gateway(settings) as (_, client):
        response = await client.get(f"/notes/v1/notes/{uuid.uuid4()}/status", headers=AUTH)
        listed = await client.get("/notes/v1/notes", headers=AUTH)
    _assert_error(response, 503, "service_unavailable", "SERVICE_UNAVAILABLE")
    _assert_error(listed, 503, "service_unavailable", "SERVICE_UNAVAILABLE")


async def test_openapi_documents_the_error_envelope(gateway):
    _, client = gateway
    spec = (await client.get("/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    assert set(spec["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error", "message", "code", "details"}
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    for path, method, operation in operations:
        if not path.startswith("/notes/v1"):
            continue
        for status in ("400", "401", "500", "503"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == envelope, (path, method, status)
        if "422" in operation["responses"]:  # documented by us, in the envelope: never FastAPI's default
            schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
            assert schema == envelope, (path, method)
        assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}]  # either style
    upload_responses = spec["paths"]["/notes/v1/notes"]["post"]["responses"]
    assert upload_responses["413"]["content"]["application/json"]["schema"] == envelope
    assert "404" in spec["paths"]["/notes/v1/notes/{note_id}"]["get"]["responses"]
    deletion = spec["paths"]["/notes/v1/notes/{note_id}"]["delete"]["responses"]
    assert {"204", "403", "404"} <= set(deletion) and "content" not in deletion["204"]
    assert "422" in spec["paths"]["/notes/v1/notes/{note_id}/transcript.txt"]["get"]["responses"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    upload = spec["paths"]["/notes/v1/notes"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["audio"]["format"] == "binary"
    assert upload["required"] == ["audio"]


# -- upload ----------------------------------------------------------------------------------


async def test_upload_answers_the_seed_note_and_reads_never_404(gateway, tone):
    _, client = gateway
    metadata = [{"key": "veterinario", "value": "Dr. Silva"}]
    response = await _upload(
        client, tone, name="Rex", gender="male", external_id="CLIENTE_123", metadata=json.dumps(metadata),
        language="pt",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"data", "meta"} and body["meta"] == {}
    note = body["data"]
    assert set(note) == NOTE_KEYS
    assert uuid.UUID(note["id"])
    assert note["name"] == "Rex" and note["gender"] == "male" and note["external_id"] == "CLIENTE_123"
    assert note["transcription_status"] == "pending"
    assert note["metadata"] == metadata
    assert ISO_UTC.match(note["created_at"]) and ISO_UTC.match(note["updated_at"])

    # Read-your-writes: straight after the 201, never a 404.
    detail, status, transcript = await asyncio.gather(
        client.get(f"/notes/v1/notes/{note['id']}", headers=AUTH),
        client.get(f"/notes/v1/notes/{note['id']}/status", headers=AUTH),
        client.get(f"/notes/v1/notes/{note['id']}/transcript.txt", headers=AUTH),
    )
    assert status.status_code == 200, status.text
    assert status.json() == {"data": {"status": "pending", "valid": True}, "meta": {}}
    assert detail.status_code == 200, detail.text
    data = detail.json()["data"]
    assert set(data) == DETAIL_KEYS
    unchanged = NOTE_KEYS - {"updated_at"}
    assert {key: data[key] for key in unchanged} == {key: note[key] for key in unchanged}
    assert ISO_UTC.match(data["updated_at"])
    assert data["transcription_url"] == f"http://testserver/notes/v1/notes/{note['id']}/transcript.txt"
    assert data["note_sections"] == [] and data["transcript"] == [] and data["failure"] is None
    body = _assert_error(transcript, 422, "unprocessable_entity", "TRANSCRIPT_NOT_READY")
    assert body["details"] == {"status": "pending"}


async def test_transcription_url_uses_the_public_base_url(tmp_path, backends, tone):
    settings = gateway_settings(tmp_path / "gw", backends, public_base_url="https://scribe.example.org/api/")
    async with running_gateway(settings) as (_, client):
        note = (await _upload(client, tone)).json()["data"]
        detail = (await client.get(f"/notes/v1/notes/{note['id']}", headers=AUTH)).json()["data"]
    assert detail["transcription_url"] == f"https://scribe.example.org/api/notes/v1/notes/{note['id']}/transcript.txt"


async def test_seed_metadata_object_is_stored_as_a_list_of_strings(gateway, tone):
    _, client = gateway
    response = await _upload(
        client, tone, metadata=json.dumps({"patient_name": "Rex", "owner_name": "João Silva", "weight_kg": 8.5,
                                           "neutered": True})
    )
    assert response.status_code == 201, response.text
    note = response.json()["data"]
    assert note["metadata"] == [
        {"key": "patient_name", "value": "Rex"},
        {"key": "owner_name", "value": "João Silva"},
        {"key": "weight_kg", "value": "8.5"},
        {"key": "neutered", "value": "true"},
    ]
    # The seed's example names the patient only in metadata.
    assert note["name"] == "Rex"
    stored = (await client.get(f"/notes/v1/notes/{note['id']}", headers=AUTH)).json()["data"]
    assert stored["metadata"] == note["metadata"]


async def test_not_audio_is_400_with_expected_and_received(gateway):
    _, client = gateway
    response = await _upload(client, b"this is not audio at all\n" * 100, filename="notes.txt",
                             content_type="text/plain")
    body = _assert_error(response, 400, "bad_request", "INVALID_AUDIO_FORMAT")
    assert "audio/wav" in body["details"]["expected"]
    assert body["details"]["received"] == "text/plain"


async def test_empty_file_is_400(gateway):
    _, client = gateway
    _assert_error(await _upload(client, b""), 400, "bad_request", "INVALID_AUDIO_FORMAT")


async def test_audio_over_the_limit_is_413(gateway):
    _, client = gateway
    # Within the gateway's allowance for form fields: ingestion counts the audio and refuses it.
    body = _assert_error(await _upload(client, b"RIFF" + b"\0" * (MAX_UPLOAD + 1000)), 413, "payload_too_large",
                         "PAYLOAD_TOO_LARGE")
    assert body["details"] == {"max_bytes": MAX_UPLOAD}
    # Content-Length far past the limit: refused before the body is read.
    body = _assert_error(await _upload(client, b"\0" * (MAX_UPLOAD + 2_000_000)), 413, "payload_too_large",
                         "PAYLOAD_TOO_LARGE")
    assert body["details"] == {"max_bytes": MAX_UPLOAD}


async def test_chunked_body_over_the_limit_is_413(gateway):
    _, client = gateway
    boundary = "scribeboundary"

    async def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n"
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(40):
            yield b"\0" * 64 * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post(
        "/notes/v1/notes",
        headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )
    _assert_error(response, 413, "payload_too_large", "PAYLOAD_TOO_LARGE")


async def test_bad_form_fields_are_400_naming_the_fields(gateway, tone):
    _, client = gateway
    response = await client.post("/notes/v1/notes", headers=AUTH, data={"name": "Rex"})
    body = _assert_error(response, 400, "bad_request", "VALIDATION_ERROR")
    assert "audio" in body["details"]["fields"]

    response = await _upload(client, tone, metadata="{not json", language="portuguese", name="x" * 300)
    body = _assert_error(response, 400, "bad_request", "VALIDATION_ERROR")
    assert set(body["details"]["fields"]) == {"metadata", "language", "name"}

    response = await _upload(client, tone, metadata=json.dumps([{"key": "a", "value": "b", "extra": 1}]))
    _assert_error(response, 400, "bad_request", "VALIDATION_ERROR")


# -- reads -----------------------------------------------------------------------------------


async def test_invalid_note_id_is_400_on_every_note_route(gateway):
    _, client = gateway
    for path in ("/notes/v1/notes/123", "/notes/v1/notes/123/status", "/notes/v1/notes/not-a-uuid/transcript.txt"):
        response = await client.get(path, headers=AUTH)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "bad_request",
            "message": "Invalid note_id format",
            "code": "INVALID_NOTE_ID",
            "details": {},
        }


async def test_unknown_note_is_404(gateway):
    _, client = gateway
    for suffix in ("", "/status", "/transcript.txt"):
        response = await client.get(f"/notes/v1/notes/{uuid.uuid4()}{suffix}", headers=AUTH)
        body = _assert_error(response, 404, "not_found", "NOTE_NOT_FOUND")
        assert body["message"] == "Note not found"


async def test_another_tenants_note_is_403(gateway, tone):
    app, client = gateway
    note = (await _upload(client, tone, name="Rex")).json()["data"]
    tenant = f"clinic-{uuid.uuid4().hex[:8]}"
    await app.state.key_store.ensure_tenant(tenant, "Clinic B")
    other, _ = await app.state.key_store.create_key(tenant, Role.ADMIN)
    response = await client.get(f"/notes/v1/notes/{note['id']}", headers={"X-API-KEY": other})
    _assert_error(response, 403, "forbidden", "NOTE_ACCESS_DENIED")
    listed = (await client.get("/notes/v1/notes", headers={"X-API-KEY": other})).json()
    assert listed == {"data": [], "meta": {"total": 0, "page": 1, "limit": 10, "total_pages": 0}}


async def test_delete_answers_204_removes_the_audio_and_then_every_read_is_404(gateway, tone, tmp_path_factory):
    app, client = gateway
    note_id = (await _upload(client, tone, name="Rex")).json()["data"]["id"]
    # The backends' ingestion keeps its blobs under this session's temporary folder.
    audio = [p for p in tmp_path_factory.getbasetemp().rglob("*") if p.is_file() and note_id in p.parts]
    assert len(audio) == 1
    tenant = f"clinic-{uuid.uuid4().hex[:8]}"
    await app.state.key_store.ensure_tenant(tenant, "Clinic B")
    other, _ = await app.state.key_store.create_key(tenant, Role.ADMIN)
    viewer, _ = await app.state.key_store.create_key("default", Role.VIEWER)
    _assert_error(await client.delete(f"/notes/v1/notes/{note_id}", headers={"X-API-KEY": other}),
                  403, "forbidden", "NOTE_ACCESS_DENIED")
    _assert_error(await client.delete(f"/notes/v1/notes/{note_id}", headers={"X-API-KEY": viewer}),
                  403, "forbidden", "INSUFFICIENT_ROLE")
    assert audio[0].exists()

    deleted = await client.delete(f"/notes/v1/notes/{note_id}", headers=AUTH)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert "x-ratelimit-remaining-minute" in deleted.headers
    assert not audio[0].exists() and not audio[0].parent.exists()
    for suffix in ("", "/status", "/transcript.txt"):
        _assert_error(await client.get(f"/notes/v1/notes/{note_id}{suffix}", headers=AUTH),
                      404, "not_found", "NOTE_NOT_FOUND")
    listed = (await client.get("/notes/v1/notes", headers=AUTH, params={"name": "Rex", "limit": 100})).json()
    assert note_id not in [n["id"] for n in listed["data"]]
    # A second DELETE, or one of a note that never existed, is 404.
    for unknown in (note_id, str(uuid.uuid4())):
        _assert_error(await client.delete(f"/notes/v1/notes/{unknown}", headers=AUTH), 404, "not_found",
                      "NOTE_NOT_FOUND")
    _assert_error(await client.delete("/notes/v1/notes/nope", headers=AUTH), 400, "bad_request", "INVALID_NOTE_ID")


async def test_list_filters_and_paginates(gateway, tone):
    app, client = gateway
    tenant = f"clinic-{uuid.uuid4().hex[:8]}"
    await app.state.key_store.ensure_tenant(tenant, "Clinic")
    key, _ = await app.state.key_store.create_key(tenant, Role.EDITOR)
    auth = {"X-API-KEY": key}
    created = []
    for name, external_id in (("Rex", "EXT-1"), ("Mimi", "EXT-2"), ("Rexona", "EXT-3")):
        response = await _upload(client, tone, headers=auth, name=name, external_id=external_id)
        assert response.status_code == 201, response.text
        created.append(response.json()["data"])

    async def listing(**params) -> dict:
        response = await client.get("/notes/v1/notes", headers=auth, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    # Lists read the projection, which follows the events: wait (bounded) until it has all three.
    for _ in range(300):
        everything = await listing()
        if everything["meta"]["total"] == 3:
            break
        await asyncio.sleep(0.1)
    assert everything["meta"] == {"total": 3, "page": 1, "limit": 10, "total_pages": 1}
    assert {note["id"] for note in everything["data"]} == {note["id"] for note in created}
    assert all(set(note) == NOTE_KEYS for note in everything["data"])

    page = await listing(limit=2, page=2)
    assert page["meta"] == {"total": 3, "page": 2, "limit": 2, "total_pages": 2}
    assert len(page["data"]) == 1
    assert [n["name"] for n in (await listing(name="rex"))["data"]] == ["Rexona", "Rex"]
    assert [n["external_id"] for n in (await listing(external_id="EXT-2"))["data"]] == ["EXT-2"]
    assert (await listing(transcription_status="pending"))["meta"]["total"] == 3
    assert (await listing(transcription_status="completed"))["meta"]["total"] == 0
    assert (await listing(days=1))["meta"]["total"] == 3
    today = created[0]["created_at"][:10]
    assert (await listing(**{"from": today, "to": today}))["meta"]["total"] == 3
    assert (await listing(**{"to": "2000-01-01"}))["meta"]["total"] == 0


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=101", "limit"),
        ("limit=0", "limit"),
        ("page=0", "page"),
        ("transcription_status=done", "transcription_status"),
        ("from=2024-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=0", "from"),
        ("to=2024-01-01T00:00:00", "to"),
        ("days=0", "days"),
        ("from=2024-02-01&to=2024-01-01", "from"),
    ],
)
async def test_list_rejects_bad_parameters_with_400(gateway, query, field):
    _, client = gateway
    response = await client.get(f"/notes/v1/notes?{query}", headers=AUTH)
    body = _assert_error(response, 400, "bad_request", "VALIDATION_ERROR")
    assert field in body["details"]["fields"], body


# -- the process -----------------------------------------------------------------------------


async def test_server_process_serves_and_exits_0_on_sigterm(tmp_path, backends):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCRIBE_DATA_DIR": str(tmp_path / "gw"),
        "SCRIBE_HTTP_PORT": str(port),
        "SCRIBE_BOOTSTRAP_API_KEY": TEST_API_KEY,
        **{f"SCRIBE_GATEWAY_{name.upper()}_ADDR": address for name, address in backends.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.server"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    response = await client.get("/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert response.status_code == 200, response.text
            listed = await client.get("/notes/v1/notes?name=Secret%20Patient", headers=AUTH)
            assert listed.status_code == 200
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.to_thread(process.communicate, timeout=30))[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line["message"] == "gateway stopped" for line in lines)
    assert all(line.get("service") == "gateway" for line in lines)
    assert TEST_API_KEY not in output and "Secret Patient" not in output


async def test_server_fails_fast_without_backend_addresses(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_GATEWAY_")}
    env.update({"PYTHONPATH": str(REPO), "SCRIBE_DATA_DIR": str(tmp_path), "SCRIBE_BOOTSTRAP_API_KEY": TEST_API_KEY})
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.server"], cwd=REPO, env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert b"ingestion_addr" in result.stdout and TEST_API_KEY.encode() not in result.stdout
