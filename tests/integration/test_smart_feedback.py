"""Smart Feedback (seed 003) over HTTP: the gateway in-process, the real notegen service on the real
broker. Notes are made the way the pipeline makes them (TranscriptionCompleted events, here with
written transcripts); 20 ids of which 3 are unknown or another tenant's queue 17, and each of the
17 follow-up messages names its patient and prescription in the consultation's language."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import AsyncExitStack

import grpc
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from common.broker import free_port
from common.db import utcnow
from common.events import timestamp
from gateway.keys import DEFAULT_TENANT_ID
from scribe.events.v1 import events_pb2 as ev
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.server import build_service
from services.query.config import QuerySettings
from services.query.server import build_service as build_query
from tests.support.events import collect, publish
from tests.support.gateway import TEST_API_KEY, gateway_settings, running_gateway
from tests.support.grpc_health import health_only_server
from tests.support.webhook_receiver import Receiver, signed_by

PATH = "/api/externalAPIs/public/smartFeedback"
BEARER = {"Authorization": f"Bearer {TEST_API_KEY}"}
# The seed's own example body (its id is one of the unknown ones here).
SEED_INSTRUCTIONS = (
    "O usuário enviou uma mensagem num momento em que o servidor estava fora do ar. CRIE a mensagem que faça "
    "sentido no contexto da conversa."
)
SEED_ID = "5893c3b4-7cfd-4348-a190-b228a5381d7a"
PATIENTS = ["Thor", "Bella", "Luna", "Max", "Nina", "Simba", "Mel", "Bob", "Toby", "Lola", "Fred", "Kiara", "Zeca",
            "Duke", "Pipoca", "Rocky", "Amora"]
DRUGS = {"pt": ["metronidazol", "amoxicilina", "meloxicam", "prednisolona"],
         "en": ["metronidazole", "amoxicillin", "meloxicam", "prednisolone"]}


def consultation(name: str, drug: str, language: str) -> types.Transcript:
    if language == "pt":
        lines = [
            f"Bom dia. Esse é o {name}? O que aconteceu com ele?",
            "Ele está vomitando há três dias e não quer comer.",
            "A temperatura está em trinta e nove graus e o peso é de doze quilos.",
            f"Vou receitar {drug} duzentos miligramas duas vezes ao dia durante cinco dias.",
            "Retorno em uma semana.",
        ]
    else:
        lines = [
            f"Good morning, this is {name}? What brings you in today?",
            "He has been vomiting for three days and will not eat.",
            "His temperature is thirty nine degrees and he weighs twelve kilos.",
            f"I will prescribe {drug} two hundred milligrams twice a day for five days.",
            "Come back in one week.",
        ]
    return types.Transcript(
        language=language,
        duration_ms=len(lines) * 4000,
        segments=[
            types.TranscriptSegment(
                start_ms=i * 4000, end_ms=i * 4000 + 3500, text=text,
                speaker=types.SPEAKER_PATIENT if i == 1 else types.SPEAKER_DOCTOR,
            )
            for i, text in enumerate(lines)
        ],
    )


async def _publish_note(broker: str, topic_prefix: str, tenant_id: str, transcript: types.Transcript) -> str:
    note_id = str(uuid.uuid4())
    run = types.RunRef(run_id=str(uuid.uuid4()), attempt=1, requested_at=timestamp(utcnow()))
    await publish(broker, topic_prefix, ev.TranscriptionCompleted(run=run, transcript=transcript),
                  tenant_id=tenant_id, note_id=note_id)
    return note_id


async def _silent_server() -> tuple[asyncio.Server, str]:
    """A TCP server that accepts and never answers: a backend stuck on the slow path."""
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_smart_feedback_queues_the_tenants_notes_and_writes_each_follow_up(tmp_path, broker, topic_prefix):
    async with AsyncExitStack() as stack:
        notegen = await build_service(
            NotegenSettings(data_dir=tmp_path / "notegen", kafka_bootstrap=broker, topic_prefix=topic_prefix,
                            shutdown_grace_s=5)
        )
        stack.push_async_callback(notegen.runtime.shutdown, "test over")
        # The query service sends the follow-ups' webhooks.
        query = await build_query(
            QuerySettings(data_dir=tmp_path / "query", kafka_bootstrap=broker, topic_prefix=topic_prefix,
                          shutdown_grace_s=5, webhook_poll_s=0.2, webhook_backoff_base_s=0.2)
        )
        stack.push_async_callback(query.runtime.shutdown, "test over")
        receiver = Receiver()
        stack.callback(receiver.close)
        others = {name: await stack.enter_async_context(health_only_server()) for name in ("ingestion", "transcription")}
        addresses = {**others, "notegen": f"127.0.0.1:{notegen.runtime.port}", "query": f"127.0.0.1:{query.runtime.port}"}

        notes: dict[str, tuple[str, str, str]] = {}
        for index, name in enumerate(PATIENTS):
            language = "pt" if index % 2 == 0 else "en"
            drug = DRUGS[language][index % 4]
            note_id = await _publish_note(broker, topic_prefix, DEFAULT_TENANT_ID, consultation(name, drug, language))
            notes[note_id] = (name, drug, language)
        foreign = await _publish_note(broker, topic_prefix, "clinic-b", consultation("Rex", "meloxicam", "pt"))
        await collect(broker, topic_prefix, ev.NoteGenerated, at_least=len(notes) + 1, timeout_s=60)
        ids = [*notes, foreign, SEED_ID, "not-a-uuid"]
        assert len(ids) == 20

        async with running_gateway(gateway_settings(tmp_path / "gw", addresses)) as (_, client):
            config = await client.put("/webhooks/v1/config", headers=BEARER, json={"url": f"{receiver.url}/feedback"})
            assert config.status_code == 200, config.text
            secret = config.json()["data"]["secret"]
            response = await client.post(
                PATH, headers=BEARER,
                json={"reasoningConfig": {"rebounce": True, "rebounceInstructions": SEED_INSTRUCTIONS},
                      "conversationIds": ids},
            )
            assert response.status_code == 200, response.text
            assert response.json() == {
                "code": 200, "message": "Success",
                "data": {"message": "Conversas enviadas para processamento", "queuedCount": 17},
            }
            batch_id = response.headers["x-batch-id"]
            assert response.headers["location"] == f"{PATH}/{batch_id}"

            deadline = time.monotonic() + 30
            while True:
                progress = (await client.get(f"{PATH}/{batch_id}", headers=BEARER)).json()["data"]
                if progress["completedCount"] == 17 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert (progress["requestedCount"], progress["queuedCount"], progress["completedCount"]) == (20, 17, 17)
            assert {item["conversationId"] for item in progress["followUps"]} == set(notes)
            for item in progress["followUps"]:
                name, drug, language = notes[item["conversationId"]]
                assert item["status"] == "completed" and item["language"] == language, item
                assert name in item["message"] and drug in item["message"].lower(), item
                greeting = "Olá! Aqui é da clínica." if language == "pt" else "Hello from the clinic!"
                assert item["message"].startswith(greeting), item

            # Every follow-up is sent to the tenant's webhook, signed.
            # (The tenant URL also gets the notes' own note.completed calls.)
            deadline = time.monotonic() + 30
            while True:
                calls = [call for call in receiver.on("/feedback")
                         if call["headers"]["x-scribe-event"].startswith("follow_up.")]
                if len(calls) >= 17 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            sent = {json.loads(call["body"])["data"]["conversationId"]: call for call in calls}
            assert set(sent) == set(notes)
            for note_id, call in sent.items():
                data = json.loads(call["body"])["data"]
                assert data["batchId"] == batch_id and data["status"] == "completed"
                assert notes[note_id][0] in data["message"] and call["headers"]["x-scribe-event"] == "follow_up.completed"
                assert signed_by(call, secret)

            one = next(iter(notes))
            detail = await client.get(f"/notes/v1/notes/{one}/follow-up", headers={"X-API-KEY": TEST_API_KEY})
            assert detail.status_code == 200 and notes[one][0] in detail.json()["data"]["message"]

            # This surface's own error shape: 401 for both key styles, 400, 404.
            for headers in ({}, {"Authorization": "Bearer sk_live_nope"}, {"X-API-KEY": "sk_live_nope"}):
                response = await client.post(PATH, headers=headers, json={"conversationIds": [SEED_ID]})
                assert response.status_code == 401
                assert response.json() == {"code": 401, "message": "Invalid or missing API key", "data": None}
            response = await client.post(PATH, headers=BEARER, json={"conversationIds": []})
            assert response.status_code == 400 and response.json()["code"] == 400 and response.json()["data"] is None
            missing = await client.get(f"{PATH}/{uuid.uuid4()}", headers=BEARER)
            assert missing.status_code == 404 and missing.json()["code"] == 404

        # The forced slow path: notegen accepts the connection and never answers.
        server, silent = await _silent_server()
        stack.callback(server.close)
        slow = gateway_settings(tmp_path / "gw-slow", {**addresses, "notegen": silent}, smart_feedback_timeout_s=0.5)
        async with running_gateway(slow) as (_, client):
            started = time.monotonic()
            response = await client.post(PATH, headers=BEARER, json={"conversationIds": [SEED_ID]})
            assert response.status_code == 408, response.text
            assert response.json() == {"code": 408, "message": "Request Timeout", "data": None}
            assert time.monotonic() - started < 5


@pytest.mark.parametrize("language", ["pt", "en", "es"])
def test_template_without_facts_still_reads_well(language):
    from services.notegen.followups import compose_follow_up

    message = compose_follow_up(None, language)
    assert message and "{" not in message


async def test_with_an_llm_the_instructions_are_followed_and_checked(tmp_path, broker, topic_prefix):
    asked: list[dict] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        if body["response_format"]["json_schema"]["name"] != "follow_up":
            return PlainTextResponse("notes are written by the rules here", status_code=503)
        payload = json.loads(body["messages"][1]["content"])
        asked.append(payload)
        facts = payload["facts"]
        drug = facts["medications"][0]["name"]
        if facts["patient_name"] == "Thor":
            message = f"Oi! Sentimos muito pela demora. Como está o Thor? Continue o {drug} como combinado."
        else:  # leaves the medication out: not accepted
            message = f"Hi! How is {facts['patient_name']} doing?"
        content = json.dumps({"message": message})
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(lambda: serving)
        stack.callback(lambda: setattr(server, "should_exit", True))
        notegen = await build_service(
            NotegenSettings(data_dir=tmp_path / "notegen", kafka_bootstrap=broker, topic_prefix=topic_prefix,
                            shutdown_grace_s=5, llm_base_url=f"http://127.0.0.1:{port}/v1", llm_model="test-model",
                            llm_timeout_s=2.0)
        )
        stack.push_async_callback(notegen.runtime.shutdown, "test over")
        thor = await _publish_note(broker, topic_prefix, "t1", consultation("Thor", "metronidazol", "pt"))
        bella = await _publish_note(broker, topic_prefix, "t1", consultation("Bella", "amoxicillin", "en"))
        await collect(broker, topic_prefix, ev.NoteGenerated, at_least=2, timeout_s=60)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{notegen.runtime.port}")
        stack.push_async_callback(channel.close)
        stub = notegen_pb2_grpc.NoteGenServiceStub(channel)
        queued = await stub.QueueFollowUps(
            pb.QueueFollowUpsRequest(tenant_id="t1", note_ids=[thor, bella], rebounce=True,
                                     instructions=SEED_INSTRUCTIONS)
        )
        deadline = time.monotonic() + 30
        while True:
            batch = await stub.GetFollowUpBatch(pb.GetFollowUpBatchRequest(tenant_id="t1", batch_id=queued.batch_id))
            if batch.completed_count == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        written = {item.note_id: item for item in batch.follow_ups}
        assert written[thor].generator == "llm:test-model" and "Thor" in written[thor].message
        assert written[thor].message.startswith("Oi! Sentimos muito")
        # The model's message for Bella left out her medication: the template's is kept.
        assert written[bella].generator == "template-v1" and "amoxicillin" in written[bella].message
        assert all(payload["instructions"] == SEED_INSTRUCTIONS for payload in asked)
        assert {payload["facts"]["patient_name"] for payload in asked} == {"Thor", "Bella"}
