"""The Notes API v1 contract (seeds 001 and 000), over HTTP against the running system.

One system is started as ``make run`` starts it (broker, four services, gateway; real Whisper
model, real speech), with two tenants made by the admin command-line tool. Every endpoint of the
seed's table and every error it documents is called with the seed's own examples where it gives
them; the answers are checked field by field. The last tests show that nothing crosses tenants.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from striprtf.striprtf import rtf_to_text

from tests.e2e.conftest import render
from tests.support.speech import make_silence
from tests.support.system import REPO, RunningSystem, start_system, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOTE_KEYS = {"id", "name", "gender", "transcription_status", "external_id", "metadata", "created_at", "updated_at"}
SECTION_KEYS = {"id", "title", "label", "content", "order"}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
LIMIT_HEADERS = [
    f"x-ratelimit-{kind}-{window}" for window in ("minute", "hour") for kind in ("limit", "remaining", "reset")
]
# The seed's own example ids and bodies.
SEED_NOTE_ID = "6a4fe1de-52c4-4b2b-a30f-4b3fa9d7d8b3"
SEED_METADATA = '{"patient_name":"Rex","owner_name":"João Silva"}'
MAX_UPLOAD = 3_000_000

# A Portuguese consultation: the European male voices Whisper base hears reliably (see conftest).
TURNS = [
    ("doctor", "Bom dia. O que aconteceu com o Rex?"),
    ("patient", "Doutora, o meu cachorro está vomitando há três dias e não quer comer."),
    ("doctor", "A temperatura está em trinta e nove graus e o peso é de doze quilos."),
    ("doctor", "Vou receitar amoxicilina duas vezes ao dia durante sete dias. Retorno em uma semana."),
]


def admin(system: RunningSystem, *args: str) -> dict | list:
    """Run the admin tool against the system's gateway database; its JSON answer."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.admin", *args, "--json"],
        cwd=REPO,
        env={"SCRIBE_DATA_DIR": str(system.data_dir), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Api:
    """The running system, its tenants' keys and the notes made for these tests."""

    def __init__(self, system: RunningSystem, keys: dict[str, str]) -> None:
        self.system = system
        self.keys = keys
        self.notes: dict[str, str] = {}

    def client(self, who: str = "a") -> httpx.Client:
        headers = {"X-API-KEY": self.keys[who]} if who else {}
        return httpx.Client(base_url=self.system.base_url, headers=headers, timeout=60)


def upload(client: httpx.Client, audio: Path, **fields: str) -> httpx.Response:
    with open(audio, "rb") as handle:
        return client.post("/notes/v1/notes", files={"audio": (audio.name, handle, "audio/wav")}, data=fields)


@pytest.fixture(scope="module")
def api(tmp_path_factory, model_dir) -> Api:
    folder = tmp_path_factory.mktemp("api")
    system = start_system(folder / "system", model_dir, extra_env={"SCRIBE_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)})
    try:
        admin(system, "tenant", "create", "clinic-b", "--name", "Clínica B")
        keys = {"a": system.api_key}
        keys["b"] = admin(system, "key", "create", "--tenant", "clinic-b", "--role", "editor", "--test")["key"]
        keys["viewer"] = admin(system, "key", "create", "--tenant", "default", "--role", "viewer", "--test")["key"]
        keys["tight"] = admin(
            system, "key", "create", "--tenant", "default", "--role", "editor", "--test", "--per-minute", "3"
        )["key"]
        api = Api(system, keys)
        (folder / "speech").mkdir()
        consultation = render(TURNS, "pt", folder / "speech" / "consulta.wav")
        api.consultation = consultation  # type: ignore[attr-defined]
        silence = make_silence(folder / "speech" / "silence.wav", 4)
        with api.client() as client:
            # The seed's curl example: audio plus metadata as a JSON object.
            created = upload(client, consultation, metadata=SEED_METADATA, gender="male", external_id="CLIENTE_123",
                             language="pt")
            assert created.status_code == 201, created.text
            api.notes["rex"] = created.json()["data"]["id"]
            api.created = created  # type: ignore[attr-defined]
            silent = upload(client, silence, name="Mudo", external_id="SILENT")
            assert silent.status_code == 201, silent.text
            api.notes["silent"] = silent.json()["data"]["id"]
            assert wait_terminal(client, api.notes["rex"]) == "completed"
            assert wait_terminal(client, api.notes["silent"]) == "failed"
        yield api
    finally:
        code = system.stop()
        assert code == 0, system.logs("launcher")


def assert_error(response: httpx.Response, status: int, error: str, code: str, message: str | None = None) -> dict:
    """The seed's error envelope, exactly."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message", "code", "details"}, body
    assert (body["error"], body["code"]) == (error, code), body
    if message is not None:
        assert body["message"] == message, body
    return body


def assert_limited(response: httpx.Response) -> None:
    for header in LIMIT_HEADERS:
        assert header in response.headers, (header, dict(response.headers))
    assert response.headers["x-ratelimit-limit-minute"] == "100"
    assert response.headers["x-ratelimit-limit-hour"] == "1000"


def assert_note(note: dict) -> None:
    assert set(note) == NOTE_KEYS, note
    assert str(uuid.UUID(note["id"])) == note["id"]
    assert ISO_UTC.match(note["created_at"]) and ISO_UTC.match(note["updated_at"])
    assert note["transcription_status"] in {"pending", "processing", "completed", "failed"}
    assert all(set(item) == {"key", "value"} for item in note["metadata"])


# -- POST /notes -------------------------------------------------------------------------------


def test_create_answers_201_with_the_note_and_metadata_as_a_list(api):
    response = api.created
    assert response.status_code == 201
    assert_limited(response)
    body = response.json()
    assert set(body) == {"data", "meta"}
    note = body["data"]
    assert_note(note)
    assert note["transcription_status"] == "pending"
    assert note["metadata"] == [{"key": "patient_name", "value": "Rex"}, {"key": "owner_name", "value": "João Silva"}]
    assert (note["name"], note["gender"], note["external_id"]) == ("Rex", "male", "CLIENTE_123")


def test_create_errors(api, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all " * 100)
    with api.client() as client:
        with open(text, "rb") as handle:
            bad = client.post("/notes/v1/notes", files={"audio": ("audio.mp3", handle, "audio/mp3")})
        body = assert_error(bad, 400, "bad_request", "INVALID_AUDIO_FORMAT")
        assert set(body["details"]) >= {"expected", "received"} and body["details"]["received"] == "audio/mp3"
        assert_error(client.post("/notes/v1/notes", data={"name": "Rex"}), 400, "bad_request", "VALIDATION_ERROR")
        big = tmp_path / "big.wav"
        big.write_bytes(b"\0" * (MAX_UPLOAD + 1_000_000))
        assert_error(upload(client, big), 413, "payload_too_large", "PAYLOAD_TOO_LARGE")
    with api.client(None) as anonymous:
        assert_error(upload(anonymous, text), 401, "unauthorized", "UNAUTHORIZED")
    with httpx.Client(base_url=api.system.base_url, headers={"X-API-KEY": "sk_live_nope"}) as wrong:
        assert_error(upload(wrong, text), 401, "unauthorized", "UNAUTHORIZED")
    with api.client("viewer") as viewer:
        assert_error(upload(viewer, text), 403, "forbidden", "INSUFFICIENT_ROLE")


# -- GET /notes --------------------------------------------------------------------------------


def test_list_with_the_seeds_filters(api):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rex, silent = api.notes["rex"], api.notes["silent"]
    with api.client() as client:
        def ids(**params) -> list[str]:
            response = client.get("/notes/v1/notes", params=params)
            assert response.status_code == 200, response.text
            assert_limited(response)
            for note in response.json()["data"]:
                assert_note(note)
            return [note["id"] for note in response.json()["data"]]

        listing = client.get("/notes/v1/notes").json()
        assert listing["meta"] == {"total": 2, "page": 1, "limit": 10, "total_pages": 1}
        assert [note["id"] for note in listing["data"]] == [silent, rex]  # newest first
        assert ids(transcription_status="completed") == [rex]
        assert ids(transcription_status="failed") == [silent]
        assert ids(name="Rex") == [rex] and ids(name="réX") == [rex] and ids(name="e") == [rex]
        assert ids(**{"from": today, "to": today}) == [silent, rex]
        assert ids(**{"from": "2024-01-01", "to": "2024-01-31"}) == []
        assert ids(days=7) == [silent, rex]
        assert ids(external_id="CLIENTE_123") == [rex]
        assert ids(transcription_status="completed", days=30, limit=50) == [rex]
        page = client.get("/notes/v1/notes", params={"limit": 1, "page": 2}).json()
        assert page["meta"] == {"total": 2, "page": 2, "limit": 1, "total_pages": 2}
        assert [note["id"] for note in page["data"]] == [rex]
        assert_error(client.get("/notes/v1/notes", params={"limit": 101}), 400, "bad_request", "VALIDATION_ERROR")
        assert_error(client.get("/notes/v1/notes", params={"page": 0}), 400, "bad_request", "VALIDATION_ERROR")
        # Found by schemathesis: a page beyond 32 bits was a 500.
        assert_error(client.get("/notes/v1/notes", params={"page": 5338601850}), 400, "bad_request",
                     "VALIDATION_ERROR")
        assert_error(client.get("/notes/v1/notes", params={"from": "2024-13-01"}), 400, "bad_request",
                     "VALIDATION_ERROR")
        assert_error(client.get("/notes/v1/notes", params={"transcription_status": "done"}), 400, "bad_request",
                     "VALIDATION_ERROR")


# -- GET /notes/{id} and /status ---------------------------------------------------------------


def test_get_a_completed_note_with_sections_and_transcript(api):
    with api.client() as client:
        response = client.get(f"/notes/v1/notes/{api.notes['rex']}")
    assert response.status_code == 200
    assert_limited(response)
    note = response.json()["data"]
    assert_note({key: note[key] for key in NOTE_KEYS})
    assert note["transcription_status"] == "completed" and note["language"] == "pt" and note["failure"] is None
    assert note["note_sections"], note
    for section in note["note_sections"]:
        assert set(section) == SECTION_KEYS and isinstance(section["order"], str)
        assert str(uuid.UUID(section["id"])) == section["id"]
    text = " ".join(item["text"] for item in note["transcript"]).lower()
    assert "rex" in text and "cachorro" in text and "quilos" in text
    # The facts beside the prose, traceable to the moment they were said.
    weight = note["structured"]["vitals"]["weight_kg"]
    assert weight["value"] == 12 and weight["unit"] == "kg"
    said = note["transcript"][weight["source_segments"][0]]
    assert (said["start_time_ms"], said["end_time_ms"]) == (weight["start_time_ms"], weight["end_time_ms"])
    assert "quilos" in said["text"].lower()
    assert {p["section_id"] for p in note["provenance"]} == {s["id"] for s in note["note_sections"]}
    starts = [item["start_time_ms"] for item in note["transcript"]]
    assert starts == sorted(starts)


def test_status_is_polled_without_limits(api):
    with api.client() as client:
        completed = client.get(f"/notes/v1/notes/{api.notes['rex']}/status")
        failed = client.get(f"/notes/v1/notes/{api.notes['silent']}/status")
        assert completed.json() == {"data": {"status": "completed", "valid": True}, "meta": {}}
        assert failed.json() == {"data": {"status": "failed", "valid": False}, "meta": {}}
        assert not any(header in completed.headers for header in LIMIT_HEADERS)
    with api.client("tight") as tight:  # 3 per minute, but status is never limited
        for _ in range(10):
            assert tight.get(f"/notes/v1/notes/{api.notes['rex']}/status").status_code == 200


@pytest.mark.parametrize("path", ["", "/status", "/export", "/transcript.txt"])
def test_note_errors_of_every_read(api, path):
    with api.client() as client:
        assert_error(client.get(f"/notes/v1/notes/not-a-uuid{path}"), 400, "bad_request", "INVALID_NOTE_ID",
                     "Invalid note_id format")
        assert_error(client.get(f"/notes/v1/notes/{SEED_NOTE_ID}{path}"), 404, "not_found", "NOTE_NOT_FOUND",
                     "Note not found")
    with api.client("b") as other:
        assert_error(other.get(f"/notes/v1/notes/{api.notes['rex']}{path}"), 403, "forbidden", "NOTE_ACCESS_DENIED",
                     "Note does not belong to current tenant")
    with api.client(None) as anonymous:
        assert_error(anonymous.get(f"/notes/v1/notes/{api.notes['rex']}{path}"), 401, "unauthorized", "UNAUTHORIZED")


# -- export ------------------------------------------------------------------------------------


def test_export_txt_and_rtf(api):
    with api.client() as client:
        note = client.get(f"/notes/v1/notes/{api.notes['rex']}").json()["data"]
        txt = client.get(f"/notes/v1/notes/{api.notes['rex']}/export", params={"format": "txt"})
        rtf = client.get(f"/notes/v1/notes/{api.notes['rex']}/export", params={"format": "rtf"})
        assert_error(client.get(f"/notes/v1/notes/{api.notes['silent']}/export", params={"format": "rtf"}), 422,
                     "unprocessable_entity", "NOTE_NOT_READY")
        assert_error(client.get(f"/notes/v1/notes/{api.notes['rex']}/export", params={"format": "pdf"}), 400,
                     "bad_request", "VALIDATION_ERROR")
    assert txt.status_code == 200 and txt.headers["content-type"] == "text/plain; charset=utf-8"
    assert txt.headers["content-disposition"] == f'attachment; filename="note-{api.notes["rex"]}.txt"'
    assert rtf.status_code == 200 and rtf.headers["content-type"] == "application/rtf"
    assert rtf.headers["content-disposition"] == f'attachment; filename="note-{api.notes["rex"]}.rtf"'
    assert_limited(rtf)
    plain = rtf_to_text(rtf.text)
    for section in note["note_sections"]:
        assert section["title"] in txt.text and section["title"] in plain
        for line in section["content"].splitlines():
            assert line.strip() in txt.text and line.strip() in plain


# -- PATCH /note_sections, retry ---------------------------------------------------------------


def test_section_edit_survives_a_retry_and_the_transcription_url_serves_the_new_text(api):
    note_id = api.notes["rex"]
    with api.client() as client:
        sections = client.get(f"/notes/v1/notes/{note_id}").json()["data"]["note_sections"]
        target = sections[0]
        edited_text = "Editado pela Dra. Silva: vômitos há 3 dias; sem febre à palpação. ¿Ñandú? ação"
        patched = client.patch("/notes/v1/note_sections", json={"id": target["id"], "content": edited_text})
        assert patched.status_code == 200, patched.text
        assert_limited(patched)
        body = patched.json()
        assert body["data"] == {**target, "content": edited_text}
        assert body["meta"]["note_id"] == note_id and body["meta"]["version"] >= 2 and body["meta"]["edited"] is True
        shown = client.get(f"/notes/v1/notes/{note_id}").json()["data"]["note_sections"]
        assert [s["content"] for s in shown if s["id"] == target["id"]] == [edited_text]

        retried = client.post(f"/notes/v1/notes/{note_id}/retry")
        assert retried.status_code == 200, retried.text
        assert_limited(retried)
        result = retried.json()
        assert set(result) == {"note_id", "status", "message", "transcription"}
        assert (result["note_id"], result["status"]) == (note_id, "processing")
        assert result["message"] == "Transcription retry initiated successfully"
        assert client.get(f"/notes/v1/notes/{note_id}/status").json()["data"]["status"] == "processing"
        busy = client.post("/notes/v1/transcripts/retry", json={"note_id": note_id})
        assert_error(busy, 400, "bad_request", "TRANSCRIPTION_IN_PROGRESS", "transcription is already being processed")

        assert wait_terminal(client, note_id) == "completed"
        after = client.get(f"/notes/v1/notes/{note_id}").json()["data"]["note_sections"]
        kept = [s for s in after if s["id"] == target["id"]]
        assert [s["content"] for s in kept] == [edited_text], after
        transcript = client.get(result["transcription"])
        assert transcript.status_code == 200 and "cachorro" in transcript.text.lower()


def test_regenerate_keeps_edits_and_makes_a_new_revision(api):
    note_id = api.notes["rex"]
    with api.client() as client:
        before = client.get(f"/notes/v1/notes/{note_id}").json()["data"]
        edited = before["note_sections"][0]
        client.patch("/notes/v1/note_sections", json={"id": edited["id"], "content": "Texto da Dra. Silva."})
        response = client.post(f"/notes/v1/notes/{note_id}/regenerate", json={"instructions": "shorter",
                                                                             "generator": "rules"})
        assert response.status_code == 200, response.text
        assert_limited(response)
        body = response.json()
        assert body["meta"]["revision"] >= 1 and body["meta"]["generator"] == "rules-v1"
        after = body["data"]
        assert after["transcription_status"] == "completed"
        kept = {s["id"]: s["content"] for s in after["note_sections"]}
        assert kept[edited["id"]] == "Texto da Dra. Silva."
        assert client.get(f"/notes/v1/notes/{note_id}").json()["data"]["note_sections"] == after["note_sections"]
        again = client.post(f"/notes/v1/notes/{note_id}/regenerate")
        assert again.json()["meta"]["revision"] == body["meta"]["revision"] + 1
        assert_error(client.post(f"/notes/v1/notes/{note_id}/regenerate", json={"generator": "llm"}), 400,
                     "bad_request", "VALIDATION_ERROR")
        assert_error(client.post(f"/notes/v1/notes/{note_id}/regenerate", json={"generator": "gpt"}), 400,
                     "bad_request", "VALIDATION_ERROR")
        assert_error(client.post(f"/notes/v1/notes/{api.notes['silent']}/regenerate"), 422,
                     "unprocessable_entity", "NOTE_NOT_READY")
        assert_error(client.post(f"/notes/v1/notes/{SEED_NOTE_ID}/regenerate"), 404, "not_found", "NOTE_NOT_FOUND")
    with api.client("b") as other:
        assert_error(other.post(f"/notes/v1/notes/{note_id}/regenerate"), 403, "forbidden", "NOTE_ACCESS_DENIED")


def test_section_edit_errors(api):
    with api.client() as client:
        section = client.get(f"/notes/v1/notes/{api.notes['rex']}").json()["data"]["note_sections"][0]
        # A Smart Feedback follow-up for the real note, so that its follow-up route has data too.
        queued = client.post("/api/externalAPIs/public/smartFeedback", json={"conversationIds": [api.notes["rex"]]})
        assert queued.json()["data"]["queuedCount"] == 1, queued.text
        for _ in range(100):
            if client.get(f"/notes/v1/notes/{api.notes['rex']}/follow-up").status_code == 200:
                break
            time.sleep(0.2)
        assert_error(client.patch("/notes/v1/note_sections", json={"id": str(uuid.uuid4()), "content": "x"}), 404,
                     "not_found", "SECTION_NOT_FOUND")
        assert_error(client.patch("/notes/v1/note_sections", json={"id": section["id"]}), 400, "bad_request",
                     "VALIDATION_ERROR")
        assert_error(client.patch("/notes/v1/note_sections", json={"id": "nope", "content": "x"}), 400,
                     "bad_request", "VALIDATION_ERROR")
        assert_error(client.patch("/notes/v1/note_sections", json={"id": section["id"], "title": "  "}), 400,
                     "bad_request", "VALIDATION_ERROR")
        assert_error(client.patch("/notes/v1/note_sections", content=b"{"), 400, "bad_request", "VALIDATION_ERROR")
    with api.client("viewer") as viewer:
        assert_error(viewer.patch("/notes/v1/note_sections", json={"id": section["id"], "content": "x"}), 403,
                     "forbidden", "INSUFFICIENT_ROLE")


def test_retry_of_a_failed_note_with_the_seed_request(api):
    note_id = api.notes["silent"]
    with api.client() as client:
        # Exactly the seed's request: POST /transcripts/retry, JSON body with note_id.
        response = client.post("/notes/v1/transcripts/retry", json={"note_id": note_id},
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json() == {
            "note_id": note_id,
            "status": "processing",
            "message": "Transcription retry initiated successfully",
            "transcription": f"{api.system.base_url}/notes/v1/notes/{note_id}/transcript.txt",
        }
        assert wait_terminal(client, note_id) == "failed"  # still silence: fails again, with its reason
        failure = client.get(f"/notes/v1/notes/{note_id}").json()["data"]["failure"]
        assert failure["code"] == "NO_SPEECH"
        unavailable = client.get(f"/notes/v1/notes/{note_id}/transcript.txt")
        assert_error(unavailable, 422, "unprocessable_entity", "TRANSCRIPT_UNAVAILABLE")


def test_two_concurrent_retries_start_one_run(api):
    note_id = api.notes["silent"]
    with api.client() as client:
        assert wait_terminal(client, note_id) == "failed"

        def retry(_: int) -> httpx.Response:
            with api.client() as own:
                return own.post("/notes/v1/transcripts/retry", json={"note_id": note_id})

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(retry, range(2)))
        assert sorted(answer.status_code for answer in answers) == [200, 400], [a.text for a in answers]
        refused = next(answer for answer in answers if answer.status_code == 400)
        assert_error(refused, 400, "bad_request", "TRANSCRIPTION_IN_PROGRESS")
        assert wait_terminal(client, note_id) == "failed"


def test_retry_errors_as_the_seed_documents_them(api):
    with api.client() as client:
        for body in [{}, {"note_id": "123"}, {"note_id": 5}, None]:
            response = client.post("/notes/v1/transcripts/retry", json=body)
            assert_error(response, 400, "bad_request", "INVALID_NOTE_ID", "Invalid note_id format")
        malformed = client.post("/notes/v1/transcripts/retry", content=b"{note_id:",
                                headers={"Content-Type": "application/json"})
        assert_error(malformed, 400, "bad_request", "INVALID_NOTE_ID", "Invalid note_id format")
        assert_error(client.post("/notes/v1/transcripts/retry", json={"note_id": SEED_NOTE_ID}), 404, "not_found",
                     "NOTE_NOT_FOUND", "Note not found")
        assert_error(client.post(f"/notes/v1/notes/{SEED_NOTE_ID}/retry"), 404, "not_found", "NOTE_NOT_FOUND")
        assert_error(client.post("/notes/v1/notes/nope/retry"), 400, "bad_request", "INVALID_NOTE_ID")
    with api.client("viewer") as viewer:
        assert_error(viewer.post(f"/notes/v1/notes/{api.notes['rex']}/retry"), 403, "forbidden", "INSUFFICIENT_ROLE")


# -- POST /generate-note ----------------------------------------------------------------------


def test_generate_note_from_transcript_items(api):
    items = [
        {"text": "Good morning, what brings you in today?", "speaker": "doctor", "start_time_ms": 0,
         "end_time_ms": 2500},
        {"text": "I have had a bad cough and a fever for five days.", "speaker": "patient", "start_time_ms": 2800,
         "end_time_ms": 6000},
        {"text": "Your temperature is thirty eight degrees. Your lungs sound clear.", "speaker": "doctor",
         "start_time_ms": 6500, "end_time_ms": 10000},
        {"text": "I will prescribe ibuprofen four hundred milligrams twice a day for five days. Come back in one "
                 "week if it is not better.", "speaker": "doctor", "start_time_ms": 10500, "end_time_ms": 16000},
    ]
    with api.client() as client:
        response = client.post("/generate-note", json={"transcript": list(reversed(items)), "domain": "human"})
        assert response.status_code == 200, response.text
        assert_limited(response)
        note = response.json()["data"]
        assert note["language"] == "en" and note["generator"]
        assert note["note_sections"] and all(set(s) == SECTION_KEYS for s in note["note_sections"])
        text = " ".join(s["content"] for s in note["note_sections"]).lower()
        assert "ibuprofen" in text and "cough" in text
        structured = note["structured"]
        [drug] = structured["medications"]
        assert (drug["name"].lower(), drug["dose"], drug["unit"], drug["duration_days"]) == ("ibuprofen", 400, "mg", 5)
        assert (drug["start_time_ms"], drug["end_time_ms"], drug["source_segments"]) == (10500, 16000, [3])
        assert structured["vitals"]["temperature_c"]["value"] == 38 and structured["flags"] == []
        sentences = [sentence for section in note["provenance"] for sentence in section["sentences"]]
        assert sentences and all(0 <= s["start_time_ms"] <= s["end_time_ms"] <= 16000 for s in sentences)
        assert {section["section_id"] for section in note["provenance"]} == {s["id"] for s in note["note_sections"]}

        # A tenfold dose is flagged on the note, never corrected.
        tenfold = client.post("/generate-note", json={"language": "en", "transcript": [
            {"text": "Good morning, what happened to Rex?", "speaker": "doctor", "start_time_ms": 0,
             "end_time_ms": 2000},
            {"text": "He has been limping on the back leg for two days.", "speaker": "patient",
             "start_time_ms": 2000, "end_time_ms": 5000},
            {"text": "He weighs ten kilos. I will give meloxicam two milligrams per kilo by mouth once a day for five "
                     "days.", "speaker": "doctor", "start_time_ms": 5000, "end_time_ms": 12000},
        ]}).json()["data"]["structured"]
        assert [flag["medication"] for flag in tenfold["flags"]] == ["meloxicam"]
        assert tenfold["medications"][0]["dose"] == 2
        too_short = client.post("/generate-note", json={"transcript": [
            {"text": "Bom dia!", "speaker": "doctor", "start_time_ms": 0, "end_time_ms": 900},
            {"text": "Bom dia, doutora.", "speaker": "patient", "start_time_ms": 1000, "end_time_ms": 2000},
        ]})
        assert_error(too_short, 422, "unprocessable_entity", "TRANSCRIPT_TOO_SHORT",
                     "We can't generate the note when the transcript is too short")
        bad = client.post("/generate-note", json={"transcript": [{"text": "x", "speaker": "nurse",
                                                                  "start_time_ms": 0, "end_time_ms": 1}]})
        assert_error(bad, 400, "bad_request", "VALIDATION_ERROR")
    with api.client(None) as anonymous:
        assert_error(anonymous.post("/generate-note", json={"transcript": items}), 401, "unauthorized",
                     "UNAUTHORIZED")


# -- rate limits, framework errors -------------------------------------------------------------


def test_a_key_over_its_limit_gets_429_with_retry_after(api):
    with api.client("tight") as client:
        answers = [client.get("/notes/v1/notes") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["x-ratelimit-remaining-minute"] for answer in answers] == ["2", "1", "0", "0"]
    limited = answers[-1]
    assert_error(limited, 429, "too_many_requests", "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit-minute"] == "3"


def test_unknown_routes_and_methods_answer_in_the_envelope(api):
    with api.client() as client:
        assert_error(client.get("/notes/v1/nothing-here"), 404, "not_found", "NOT_FOUND")
        assert_error(client.delete("/notes/v1/notes"), 405, "method_not_allowed", "METHOD_NOT_ALLOWED")


# -- DELETE /notes/{id} ------------------------------------------------------------------------


def _rows_of(system: RunningSystem, note_id: str) -> dict[str, int]:
    """How many rows each service's database still holds about the note (tombstones aside)."""
    tables = {"transcription": "transcription_jobs", "notegen": "generations", "query": "notes"}
    counts = {}
    for service, table in tables.items():
        with sqlite3.connect(system.data_dir / f"{service}.db") as db:
            counts[table] = db.execute(f"select count(*) from {table} where note_id = ?", (note_id,)).fetchone()[0]
    with sqlite3.connect(system.data_dir / "notegen.db") as db:
        counts["section_edits"] = db.execute(
            "select count(*) from section_edits where note_id = ?", (note_id,)
        ).fetchone()[0]
    return counts


def test_delete_removes_the_note_everywhere_and_answers_404_after(api):
    with api.client() as client:
        created = upload(client, api.consultation, name="Apagar", external_id="DELETE_ME", language="pt")
        assert created.status_code == 201, created.text
        note_id = created.json()["data"]["id"]
        assert wait_terminal(client, note_id) == "completed"
        note = client.get(f"/notes/v1/notes/{note_id}").json()["data"]
        edited = client.patch("/notes/v1/note_sections", json={"id": note["note_sections"][0]["id"], "content": "x"})
        assert edited.status_code == 200, edited.text
        blobs = [p for p in (api.system.data_dir / "blobs").rglob("*") if p.is_file() and note_id in p.parts]
        assert len(blobs) == 1

        # Neither a viewer key nor another tenant may delete it.
        with api.client("viewer") as viewer:
            assert_error(viewer.delete(f"/notes/v1/notes/{note_id}"), 403, "forbidden", "INSUFFICIENT_ROLE")
        with api.client("b") as client_b:
            assert_error(client_b.delete(f"/notes/v1/notes/{note_id}"), 403, "forbidden", "NOTE_ACCESS_DENIED")
        assert client.get(f"/notes/v1/notes/{note_id}").status_code == 200

        deleted = client.delete(f"/notes/v1/notes/{note_id}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""
        assert_limited(deleted)
        assert not blobs[0].exists()
        for path in ("", "/status", "/transcript.txt", "/export"):
            assert_error(client.get(f"/notes/v1/notes/{note_id}{path}"), 404, "not_found", "NOTE_NOT_FOUND")
        listed = client.get("/notes/v1/notes", params={"external_id": "DELETE_ME"}).json()
        assert (listed["data"], listed["meta"]["total"]) == ([], 0)
        assert_error(client.post(f"/notes/v1/notes/{note_id}/retry"), 404, "not_found", "NOTE_NOT_FOUND")
        # Deleting again, or a note that never was: 404.
        assert_error(client.delete(f"/notes/v1/notes/{note_id}"), 404, "not_found", "NOTE_NOT_FOUND")
        assert_error(client.delete(f"/notes/v1/notes/{SEED_NOTE_ID}"), 404, "not_found", "NOTE_NOT_FOUND")
        assert_error(client.delete("/notes/v1/notes/not-a-uuid"), 400, "bad_request", "INVALID_NOTE_ID")
    with api.client("b") as client_b:
        assert_error(client_b.delete(f"/notes/v1/notes/{note_id}"), 404, "not_found", "NOTE_NOT_FOUND")

    # Every service has removed what it held (transcription and notegen learn of it by event).
    deadline = time.monotonic() + 30
    while (rows := _rows_of(api.system, note_id)) != dict.fromkeys(rows, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rows == dict.fromkeys(rows, 0), rows


# -- tenancy -----------------------------------------------------------------------------------


def test_nothing_crosses_tenants(api, tmp_path):
    rex = api.notes["rex"]
    with api.client() as client_a:
        section = client_a.get(f"/notes/v1/notes/{rex}").json()["data"]["note_sections"][0]
    with api.client("b") as client_b:
        assert client_b.get("/notes/v1/notes").json()["meta"]["total"] == 0
        assert client_b.get("/notes/v1/notes", params={"name": "Rex"}).json()["data"] == []
        assert client_b.get("/notes/v1/notes", params={"external_id": "CLIENTE_123"}).json()["data"] == []
        denied = [
            client_b.get(f"/notes/v1/notes/{rex}"),
            client_b.get(f"/notes/v1/notes/{rex}/status"),
            client_b.get(f"/notes/v1/notes/{rex}/export", params={"format": "rtf"}),
            client_b.get(f"/notes/v1/notes/{rex}/transcript.txt"),
            client_b.post(f"/notes/v1/notes/{rex}/retry"),
            client_b.post("/notes/v1/transcripts/retry", json={"note_id": rex}),
            client_b.patch("/notes/v1/note_sections", json={"id": section["id"], "content": "hijacked"}),
        ]
        for response in denied:
            assert_error(response, 403, "forbidden", "NOTE_ACCESS_DENIED")
        # B's own note is B's alone.
        silence = make_silence(tmp_path / "b.wav", 2)
        own = upload(client_b, silence, name="Bidu").json()["data"]["id"]
        # Lists follow the read model, which may trail a 201 by a moment (GET and status never do).
        assert wait_terminal(client_b, own) == "failed"
        assert [n["id"] for n in client_b.get("/notes/v1/notes").json()["data"]] == [own]
    with api.client() as client_a:
        assert own not in [n["id"] for n in client_a.get("/notes/v1/notes", params={"limit": 100}).json()["data"]]
        assert_error(client_a.get(f"/notes/v1/notes/{own}"), 403, "forbidden", "NOTE_ACCESS_DENIED")
        # A's section is untouched and A's note was not retried.
        after = client_a.get(f"/notes/v1/notes/{rex}").json()["data"]
        assert [s["content"] for s in after["note_sections"] if s["id"] == section["id"]] == [section["content"]]
        assert after["transcription_status"] == "completed"


# -- the OpenAPI document against the behaviour --------------------------------------------------


def _schemathesis(base_url: str, key: str, folder: Path, config: str = "", include: str | None = None) -> str:
    """One bounded, seeded schemathesis run over every operation (or those whose path matches
    ``include``); its output when it found nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schemathesis.toml").write_text(config)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(folder / "schemathesis.toml"),
            "run", f"{base_url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance",
            "--header", f"X-API-KEY: {key}",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "25", "--seed", "20261121",
            # One worker: hypothesis' lambda descriptions call ast.parse, which is not thread-safe on
            # CPython 3.11 ("AST constructor recursion depth mismatch" inside schemathesis).
            "--workers", "1",
            "--request-timeout", "30", "--no-color", "--suppress-health-check", "all",
            "--report", "junit", "--report-dir", str(folder / "report"),
            *(["--include-path-regex", include] if include else []),
        ],
        cwd=folder, capture_output=True, text=True, timeout=900,
    )
    (folder / "schemathesis.txt").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    # Not vacuous: every operation was tested, with a few hundred cases, all three phases run.
    spec = httpx.get(f"{base_url}/openapi.json").json()
    operations = sum(len(item) for path, item in spec["paths"].items() if include is None or re.search(include, path))
    assert re.search(rf"Tested: {operations}\b", result.stdout), result.stdout[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated and int(generated[1]) >= 300 and generated[1] == generated[2], result.stdout[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing"):
        assert re.search(rf"✅ {phase}", result.stdout), result.stdout[-3000:]
    return result.stdout


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(api, tmp_path):
    """Bounded schemathesis runs (fixed seed) over every operation of /openapi.json.

    Each uses a key whose limits it cannot reach, so that what it checks is each route's own
    answers, not 429s (429 stays documented where it can happen). The first run, in an empty tenant
    of its own, explores unknown ids; the second points every note id and section id at the real
    notes of the tests above, so exports, retries, edits and transcripts of real notes are fuzzed.
    """
    admin(api.system, "tenant", "create", "fuzz", "--name", "Schemathesis")
    limits = ("--per-minute", "1000000", "--per-hour", "10000000")
    fuzz_key = admin(api.system, "key", "create", "--tenant", "fuzz", "--role", "admin", "--test", *limits)["key"]
    _schemathesis(api.system.base_url, fuzz_key, tmp_path / "empty-tenant")

    own_key = admin(api.system, "key", "create", "--tenant", "default", "--role", "admin", "--test", *limits)["key"]
    with api.client() as client:
        section = client.get(f"/notes/v1/notes/{api.notes['rex']}").json()["data"]["note_sections"][0]
        # A Smart Feedback follow-up for the real note, so that its follow-up route has data too.
        queued = client.post("/api/externalAPIs/public/smartFeedback", json={"conversationIds": [api.notes["rex"]]})
        assert queued.json()["data"]["queuedCount"] == 1, queued.text
        for _ in range(100):
            if client.get(f"/notes/v1/notes/{api.notes['rex']}/follow-up").status_code == 200:
                break
            time.sleep(0.2)
        # DELETE gets a note of its own: deleting the real notes would leave the other routes only 404s.
        # It can succeed once only; every later case answers 404, which is not missing test data.
        doomed = upload(client, make_silence(tmp_path / "doomed.wav", 2), name="Doomed")
        assert doomed.status_code == 201, doomed.text
    config = "\n".join(
        [
            "[parameters]",
            f'"path.note_id" = "{api.notes["rex"]}"',
            f'"body.note_id" = "{api.notes["silent"]}"',
            f'"body.id" = "{section["id"]}"',
            "",
            "[[operations]]",
            'include-name = "DELETE /notes/v1/notes/{note_id}"',
            f'parameters = {{ "path.note_id" = "{doomed.json()["data"]["id"]}" }}',
            "warnings = false",
            "",
        ]
    )
    # The Notes API's operations: the other surfaces' ids (deliveries, batches, tasks) have no
    # real data in this system; their own tests drive them with real ids.
    output = _schemathesis(api.system.base_url, own_key, tmp_path / "real-notes", config, include="^/notes/v1/")
    assert "Missing test data" not in output, output[-3000:]
