"""Seed 002's async transcription and the webhooks, over HTTP against the running system.

One system is started as ``make run`` starts it, with webhook retries shortened. A webhook receiver
runs in the test on loopback: one path fails its first two calls (500) then accepts, one refuses
(400). Two requests are transcribed (speech and silence); everything else checks contracts: both
auth styles and their 401, the client id's idempotency (same content: same request; other
content: 409), the seed's 422 for a too-short transcript, the delivery log and replay, the
signatures during a secret rotation, and the OpenAPI document.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import render
from tests.e2e.test_notes_api import admin
from tests.support.speech import make_silence
from tests.support.system import RunningSystem, start_system
from tests.support.webhook_receiver import Receiver, signatures, signed_by

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TURNS = [
    ("doctor", "Good morning. What brings you in today?"),
    ("patient", "I have had a bad cough and a fever for five days."),
]
# The seed's own examples.
SEED_ID = "98FCE1EF-DBCA-41EF-8BC7-4D1621AC07C6"
SEED_ITEM = {"text": "Also, I’m allergic to peanuts.", "speaker": "patient", "start_time_ms": 65100, "end_time_ms": 69300}
UNAUTHORIZED = {"error": "unauthorized", "message": "Invalid or missing API key", "code": "UNAUTHORIZED", "details": {}}
ITEM_KEYS = {"text", "speaker", "start_time_ms", "end_time_ms"}


class Env:
    def __init__(self, system: RunningSystem, receiver: Receiver, audio: dict[str, Path]) -> None:
        self.system, self.receiver, self.audio = system, receiver, audio
        self.ids: dict[str, str] = {}
        self.secret = ""

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.system.base_url, headers=headers or {"X-API-KEY": self.system.api_key}, timeout=60
        )


def post_audio(client: httpx.Client, audio: Path, **fields: str) -> httpx.Response:
    with open(audio, "rb") as handle:
        return client.post("/transcribe-async", files={"audio": (audio.name, handle, "audio/wav")}, data=fields)


def wait_async(client: httpx.Client, request_id: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/transcribe-async/{request_id}")
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            if response.json()["status"] != "ongoing":
                return response.json()
        time.sleep(0.5)
    raise TimeoutError(request_id)


@pytest.fixture(scope="module")
def env(tmp_path_factory, model_dir) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("async")
    receiver = Receiver()
    system = start_system(
        folder / "system",
        model_dir,
        extra_env={
            "SCRIBE_QUERY_WEBHOOK_BACKOFF_BASE_S": "0.3",
            "SCRIBE_QUERY_WEBHOOK_POLL_S": "0.2",
            "SCRIBE_QUERY_WEBHOOK_TIMEOUT_S": "3",
            "SCRIBE_QUERY_WEBHOOK_RETRY_WINDOW_S": "60",
        },
    )
    try:
        (folder / "speech").mkdir()
        audio = {
            "speech": render(TURNS, "en", folder / "speech" / "visit.wav"),
            "silence": make_silence(folder / "speech" / "silence.wav", 3),
        }
        env = Env(system, receiver, audio)
        with env.client() as client:
            # The tenant's secret first, so that the signatures can be checked.
            config = client.put("/webhooks/v1/config", json={"url": f"{receiver.url}/tenant"})
            assert config.status_code == 200, config.text
            env.secret = config.json()["data"]["secret"]
            assert env.secret.startswith(config.json()["data"]["secret_prefix"])
            speech = post_audio(client, audio["speech"], id=SEED_ID, callback_url=f"{receiver.url}/flaky", language="en")
            assert speech.status_code == 202, speech.text
            env.ids["speech"] = speech.json()["id"]
            env.first_answer = speech.json()  # type: ignore[attr-defined]
            silent = post_audio(client, audio["silence"], callback_url=f"{receiver.url}/reject")
            assert silent.status_code == 202, silent.text
            env.ids["silence"] = silent.json()["id"]
            # A note of the Notes API: its outcome goes to the tenant's URL.
            with open(audio["speech"], "rb") as handle:
                note = client.post("/notes/v1/notes", files={"audio": ("visit.wav", handle, "audio/wav")},
                                   data={"name": "Rex", "language": "en"})
            assert note.status_code == 201, note.text
            env.ids["note"] = note.json()["data"]["id"]
        env.other_key = admin(system, "key", "create", "--tenant", "default", "--role", "viewer", "--test")["key"]
        admin(system, "tenant", "create", "clinic-b", "--name", "Clinic B")
        env.foreign_key = admin(system, "key", "create", "--tenant", "clinic-b", "--role", "admin", "--test")["key"]
        yield env
    finally:
        receiver.close()
        code = system.stop()
        assert code == 0, system.logs("launcher")


def test_post_answers_at_once_with_the_request_id_and_client_id(env):
    body = env.first_answer
    assert body == {"id": body["id"], "client_id": SEED_ID, "status": "ongoing"}
    assert str(uuid.UUID(body["id"])) == body["id"]


def test_both_auth_styles_and_their_401(env):
    request_id = env.ids["speech"]
    with env.client(Authorization=f"Bearer {env.system.api_key}") as bearer:
        assert bearer.get(f"/transcribe-async/{request_id}").status_code == 200
        assert bearer.get("/webhooks/v1/config").status_code == 200
    for headers in ({}, {"X-API-KEY": "sk_live_nope"}, {"Authorization": "Bearer sk_live_nope"}):
        with httpx.Client(base_url=env.system.base_url, headers=headers, timeout=30) as client:
            for response in (
                client.get(f"/transcribe-async/{request_id}"),
                post_audio(client, env.audio["silence"]),
                client.get("/webhooks/v1/deliveries"),
                client.post("/generate-note", json={"transcript": [SEED_ITEM]}),
            ):
                assert response.status_code == 401, (headers, response.text)
                assert response.json() == UNAUTHORIZED


def test_succeeded_transcript_in_the_seeds_shape_and_no_note(env):
    with env.client() as client:
        body = wait_async(client, env.ids["speech"])
        assert body["status"] == "succeeded", body
        assert (body["id"], body["client_id"]) == (env.ids["speech"], SEED_ID)
        items = body["payload"]["transcript"]
        assert items and all(set(item) == ITEM_KEYS for item in items)
        assert all(item["speaker"] in {"doctor", "patient", "unspecified"} for item in items)
        assert all(item["end_time_ms"] >= item["start_time_ms"] for item in items)
        assert [item["start_time_ms"] for item in items] == sorted(item["start_time_ms"] for item in items)
        assert "fever" in " ".join(item["text"] for item in items).lower()
        # The seed's example id, uppercase, reads the same request.
        assert client.get(f"/transcribe-async/{env.ids['speech'].upper()}").json() == body
        # A transcription request makes no note, and is not listed among the notes.
        time.sleep(2)
        listed = [note["id"] for note in client.get("/notes/v1/notes").json()["data"]]
        assert env.ids["note"] in listed and env.ids["speech"] not in listed and env.ids["silence"] not in listed
        assert client.get(f"/notes/v1/notes/{env.ids['speech']}").json()["data"]["note_sections"] == []
        unknown = client.get(f"/transcribe-async/{uuid.uuid4()}")
        assert unknown.status_code == 404 and unknown.json()["code"] == "REQUEST_NOT_FOUND"
        assert client.get("/transcribe-async/not-an-id").status_code == 400


def test_other_tenants_see_nothing(env):
    with env.client(**{"X-API-KEY": env.foreign_key}) as foreign:
        response = foreign.get(f"/transcribe-async/{env.ids['speech']}")
        assert response.status_code == 404 and response.json()["code"] == "REQUEST_NOT_FOUND"
        assert foreign.get("/webhooks/v1/deliveries").json()["data"] == []
        # Their own client id space: the same id is a new request of theirs, not a conflict.
        response = post_audio(foreign, env.audio["silence"], id=SEED_ID)
        assert response.status_code == 202 and response.json()["id"] != env.ids["speech"]
    with env.client(**{"X-API-KEY": env.other_key}) as viewer:
        assert viewer.get(f"/transcribe-async/{env.ids['speech']}").status_code == 200
        response = post_audio(viewer, env.audio["silence"])
        assert response.status_code == 403 and response.json()["code"] == "INSUFFICIENT_ROLE"
        assert viewer.post("/webhooks/v1/secret/rotate").status_code == 403


def test_notes_api_callback_url_signed_by_a_secret_shown_at_the_first_config(env):
    with env.client(**{"X-API-KEY": env.foreign_key}) as foreign:
        with open(env.audio["silence"], "rb") as handle:
            note = foreign.post("/notes/v1/notes", files={"audio": ("mute.wav", handle, "audio/wav")},
                                data={"name": "Mudo", "callback_url": f"{env.receiver.url}/b-note"})
        assert note.status_code == 201, note.text
        note_id = note.json()["data"]["id"]
        calls = env.receiver.wait_for("/b-note", 1)
        body = json.loads(calls[0]["body"])
        assert calls[0]["headers"]["x-scribe-event"] == "note.failed"
        assert body["data"]["id"] == note_id and body["data"]["status"] == "failed"
        assert body["data"]["valid"] is False and body["data"]["failure"]["code"] == "NO_SPEECH"
        # The tenant had no webhook secret: one was made for the call, and the first config answers it.
        first = foreign.put("/webhooks/v1/config", json={"url": ""}).json()["data"]
        assert signed_by(calls[0], first["secret"])
        assert "secret" not in foreign.put("/webhooks/v1/config", json={"url": ""}).json()["data"]


def test_a_note_reaching_completed_is_sent_to_the_tenant_url(env):
    calls = env.receiver.wait_for("/tenant", 1)
    assert calls[0]["headers"]["x-scribe-event"] == "note.completed"
    assert json.loads(calls[0]["body"]) == {
        "data": {"id": env.ids["note"], "status": "completed", "valid": True}, "meta": {}
    }
    assert signed_by(calls[0], env.secret)


def test_smart_feedback_over_http_queues_only_known_notes_and_resumes_the_consultation(env):
    """Seed 003 through the launcher-started system: the seed's exact answer, a batch whose progress
    reaches the one known note's follow-up message, in English. (This short consultation names no
    patient, drug or finding: tests/integration/test_smart_feedback.py checks those over 17 notes.)"""
    env.receiver.wait_for("/tenant", 1)  # the note is completed
    path = "/api/externalAPIs/public/smartFeedback"
    with env.client(Authorization=f"Bearer {env.system.api_key}") as client:
        answer = client.post(path, json={
            "conversationIds": [env.ids["note"], str(uuid.uuid4())],
            "reasoningConfig": {"rebounce": True, "rebounceInstructions": "Ask how the cough is going."},
        })  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body == {"code": 200, "message": "Success", "data": {"message": body["data"]["message"], "queuedCount": 1}}
        batch_id = answer.headers["X-Batch-Id"]
        deadline = time.monotonic() + 60
        while True:
            progress = client.get(f"{path}/{batch_id}")
            assert progress.status_code == 200, progress.text
            data = progress.json()["data"]
            if data["completedCount"] + data["failedCount"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert (data["requestedCount"], data["queuedCount"], data["completedCount"]) == (2, 1, 1), data
        follow_up = client.get(f"/notes/v1/notes/{env.ids['note']}/follow-up")
        assert follow_up.status_code == 200, follow_up.text
        item = follow_up.json()["data"]
        assert item["status"] == "completed" and item["language"] == "en"
        assert item["message"].startswith("Hello from the clinic!")
        assert item["message"] == data["followUps"][0]["message"]
        unauthorized = httpx.post(f"{env.system.base_url}{path}", json={"conversationIds": [env.ids["note"]]})
        assert unauthorized.status_code == 401
        assert unauthorized.json() == {"code": 401, "message": unauthorized.json()["message"], "data": None}


def test_failed_reports_the_reason(env):
    with env.client() as client:
        body = wait_async(client, env.ids["silence"])
    assert body["status"] == "failed"
    assert "client_id" not in body
    assert body["payload"]["code"] == "NO_SPEECH" and body["payload"]["message"]


def test_client_id_is_an_idempotency_key(env):
    with env.client() as client:
        again = post_audio(client, env.audio["speech"], id=SEED_ID, callback_url=f"{env.receiver.url}/flaky",
                           language="en")
        assert again.status_code == 202, again.text
        assert again.json()["id"] == env.ids["speech"] and again.headers["idempotent-replayed"] == "true"
        for conflicting in (
            post_audio(client, env.audio["silence"], id=SEED_ID, callback_url=f"{env.receiver.url}/flaky",
                       language="en"),
            post_audio(client, env.audio["speech"], id=SEED_ID, language="pt"),
        ):
            assert conflicting.status_code == 409, conflicting.text
            assert conflicting.json()["code"] == "IDEMPOTENCY_CONFLICT"
        too_long = post_audio(client, env.audio["speech"], id="x" * 129)
        assert too_long.status_code == 400 and too_long.json()["code"] == "VALIDATION_ERROR"


def test_generate_note_422_when_the_transcript_is_too_short(env):
    with env.client() as client:
        response = client.post("/generate-note", json={"transcript": [SEED_ITEM]})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "TRANSCRIPT_TOO_SHORT"


def test_webhook_retried_after_two_500s_is_delivered_signed_and_logged(env):
    calls = env.receiver.wait_for("/flaky", 3)
    assert len(calls) == 3
    with env.client() as client:
        current = client.get(f"/transcribe-async/{env.ids['speech']}").json()
        assert json.loads(calls[2]["body"]) == current  # the same JSON as the GET answers
        assert all(signed_by(call, env.secret) for call in calls)
        assert calls[2]["headers"]["x-scribe-event"] == "transcription.succeeded"
        listing = client.get("/webhooks/v1/deliveries", params={"request_id": env.ids["speech"]}).json()["data"]
        assert len(listing) == 1 and listing[0]["status"] == "succeeded"
        detail = client.get(f"/webhooks/v1/deliveries/{listing[0]['id']}").json()["data"]
    assert [attempt["status_code"] for attempt in detail["attempts"]] == [500, 500, 200]
    assert [attempt["attempt"] for attempt in detail["attempts"]] == [1, 2, 3]
    assert all(attempt["duration_ms"] >= 0 and attempt["attempted_at"] for attempt in detail["attempts"])
    # Nothing else arrived: one terminal state, one delivery; the tenant URL was not used for it.
    time.sleep(1)
    assert len(env.receiver.on("/flaky")) == 3


def test_a_400_gets_one_attempt_then_replay_and_rotation(env):
    calls = env.receiver.wait_for("/reject", 1)
    time.sleep(2)  # back-off would have retried by now
    assert len(env.receiver.on("/reject")) == 1
    assert json.loads(calls[0]["body"])["status"] == "failed"
    with env.client() as client:
        deliveries = client.get("/webhooks/v1/deliveries", params={"request_id": env.ids["silence"]}).json()["data"]
        assert len(deliveries) == 1
        delivery = client.get(f"/webhooks/v1/deliveries/{deliveries[0]['id']}").json()["data"]
        assert delivery["status"] == "failed" and delivery["attempt_count"] == 1
        assert [attempt["status_code"] for attempt in delivery["attempts"]] == [400]

        # The receiver is fixed; the secret rotates; a replay is signed by both secrets.
        env.receiver.reject_status = 200
        rotated = client.post("/webhooks/v1/secret/rotate", json={"overlap_s": 3600})
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["data"]["secret"]
        assert new_secret != env.secret and rotated.json()["data"]["previous_secret_expires_at"]
        assert "secret" not in client.get("/webhooks/v1/config").json()["data"]
        replay = client.post(f"/webhooks/v1/deliveries/{delivery['id']}/replay")
        assert replay.status_code == 200, replay.text
        calls = env.receiver.wait_for("/reject", 2, timeout_s=30)
        assert len(signatures(calls[1])) == 2
        assert signed_by(calls[1], new_secret) and signed_by(calls[1], env.secret)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            delivery = client.get(f"/webhooks/v1/deliveries/{delivery['id']}").json()["data"]
            if delivery["status"] == "succeeded":
                break
            time.sleep(0.2)
        assert [attempt["status_code"] for attempt in delivery["attempts"]] == [400, 200]
        missing = client.get(f"/webhooks/v1/deliveries/{uuid.uuid4()}")
        assert missing.status_code == 404


# -- seed 004: process_audio_v2 ------------------------------------------------------------------


def store(client: httpx.Client, user_id: str, audio: Path) -> httpx.Response:
    with open(audio, "rb") as handle:
        return client.post(f"/upload_audio/{user_id}", files={"file": (f"{audio.stem}.wav", handle, "audio/wav")})


def wait_task(client: httpx.Client, task_id: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/get_audio_task/{task_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] in ("SUCCESS", "FAILURE"):
            return response.json()
        time.sleep(0.5)
    raise TimeoutError(task_id)


def test_process_audio_v2_with_the_seeds_example(env):
    with env.client() as client:
        stored = store(client, "12345", env.audio["speech"])
        assert stored.status_code == 201, stored.text
        file_id = stored.json()["file_id"]
        assert stored.json()["user_id"] == "12345" and stored.json()["size_bytes"] > 0
        silent = store(client, "12345", env.audio["silence"]).json()["file_id"]

        started = client.post("/process_audio_v2/12345", params={"file_id": file_id, "file_name": "visit"})
        assert started.status_code == 200, started.text
        assert started.json() == {"message": "Audio processing started in the background",
                                  "task_id": started.json()["task_id"]}
        failing = client.post("/process_audio_v2/12345", params={"file_id": silent, "file_extension": "m4a"})
        assert failing.status_code == 200, failing.text

        # Errors: no file id, another user's file, unknown file, bad extension.
        assert client.post("/process_audio_v2/12345").status_code == 400
        for user, file in (("99999", file_id), ("12345", str(uuid.uuid4()))):
            response = client.post(f"/process_audio_v2/{user}", params={"file_id": file})
            assert response.status_code == 404 and response.json()["code"] == "FILE_NOT_FOUND", response.text
        assert client.post("/process_audio_v2/12345", params={"file_id": file_id, "file_extension": "../x"}
                           ).status_code == 400

        done = wait_task(client, started.json()["task_id"])
        assert done["status"] == "SUCCESS", done
        assert done["result"]["id"] == started.json()["task_id"] and done["result"]["name"] == "visit"
        assert done["result"]["note_sections"] and "error" not in done
        failed = wait_task(client, failing.json()["task_id"])
        assert failed["status"] == "FAILURE" and "result" not in failed
        assert failed["error"]["code"] == "NO_SPEECH" and failed["error"]["message"]

    with env.client(**{"X-API-KEY": env.foreign_key}) as foreign:
        response = foreign.post("/process_audio_v2/12345", params={"file_id": file_id})
        assert response.status_code == 404 and response.json()["code"] == "FILE_NOT_FOUND"
        assert foreign.get(f"/get_audio_task/{started.json()['task_id']}").status_code == 403
    with httpx.Client(base_url=env.system.base_url, timeout=30) as anonymous:
        for response in (
            anonymous.post("/process_audio_v2/12345", params={"file_id": file_id}),
            anonymous.get(f"/get_audio_task/{started.json()['task_id']}"),
            store(anonymous, "12345", env.audio["silence"]),
        ):
            assert response.status_code == 401 and response.json() == UNAUTHORIZED


def test_openapi_documents_the_new_surfaces(env):
    with httpx.Client(base_url=env.system.base_url) as client:
        document = client.get("/openapi.json").json()
    paths = document["paths"]
    post = paths["/transcribe-async"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"202", "401", "409"} <= set(post["responses"])
    assert "/transcribe-async/{request_id}" in paths
    schema = document["components"]["schemas"]["AsyncTranscription"]
    assert schema["properties"]["status"]["enum"] == ["ongoing", "failed", "succeeded"]
    for path in ("/webhooks/v1/config", "/webhooks/v1/secret/rotate", "/webhooks/v1/deliveries",
                 "/webhooks/v1/deliveries/{delivery_id}", "/webhooks/v1/deliveries/{delivery_id}/replay"):
        assert path in paths
    assert {"ApiKey", "Bearer"} <= set(document["components"]["securitySchemes"])
    for path in ("/upload_audio/{user_id}", "/process_audio_v2/{user_id}", "/get_audio_task/{task_id}"):
        assert path in paths
    assert "500" in paths["/process_audio_v2/{user_id}"]["post"]["responses"]
