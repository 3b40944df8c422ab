"""The LLM generator against a local server that speaks the chat-completions protocol.

No language model can run here, so the server is a stand-in that answers what a model could
answer: a good note, malformed output, nothing in time, an HTTP error, or a note with an invented
fact. What is tested is ours: the request we send (schema, numbered transcript), the verification
that drops what the transcript does not say, and the fallback to the offline generator, through
the real notegen service over gRPC.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from common.broker import free_port
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.domain.sections import title_for
from services.notegen.server import build_service

LINES = [
    ("doctor", "Good morning, what brings you in today?"),
    ("patient", "My dog Rex has been vomiting for three days and he will not eat."),
    ("doctor", "His temperature is 39.5 degrees and he weighs 12 kilos."),
    ("doctor", "I will prescribe metronidazole 250 milligrams twice a day for five days."),
    ("doctor", "Come back in one week for a follow up visit."),
]
GOOD = {
    "sections": [
        {"label": "chief_complaint", "sentences": [{"text": "Vomiting for three days, not eating.", "lines": [1]}]},
        {"label": "physical_exam", "sentences": [{"text": "Temperature 39.5 degrees, weight 12 kilos.", "lines": [2]}]},
        {"label": "prescriptions", "sentences": [
            {"text": "Metronidazole 250 milligrams twice a day for five days.", "lines": [3]}]},
        {"label": "follow_up", "sentences": [{"text": "Come back in one week.", "lines": [4]}]},
    ]
}
INVENTED = {
    "sections": [
        GOOD["sections"][0],
        {"label": "prescriptions", "sentences": [
            {"text": "Metronidazole 250 milligrams twice a day for five days.", "lines": [3]},
            # Said nowhere: a drug and a dose the model made up, citing a real line.
            {"text": "Amoxicillin 500 milligrams three times a day.", "lines": [3]},
        ]},
        # A number the cited line does not say.
        {"label": "physical_exam", "sentences": [{"text": "Temperature 41.2 degrees.", "lines": [2]}]},
        # A citation of a line that does not exist.
        {"label": "plan", "sentences": [{"text": "Hospitalise for observation.", "lines": [42]}]},
    ]
}


class ChatServer:
    """A chat-completions endpoint whose next answer the test chooses."""

    def __init__(self) -> None:
        self.mode = "good"
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request):
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        if self.mode == "timeout":
            await asyncio.sleep(5)
        if self.mode == "error":
            return PlainTextResponse("overloaded", status_code=503)
        content = {
            "good": json.dumps(GOOD),
            "invented": json.dumps(INVENTED),
            "malformed": "Here is your note: {sections: [",
            "timeout": json.dumps(GOOD),
            "wrong_shape": json.dumps({"note": "free text"}),
        }[self.mode]
        return JSONResponse({"id": "x", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                          "finish_reason": "stop"}]})


@pytest.fixture
async def chat() -> AsyncIterator[tuple[ChatServer, str]]:
    server = ChatServer()
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
    yield server, f"http://127.0.0.1:{port}/v1"
    uv.should_exit = True
    await task


@pytest.fixture
async def notegen(tmp_path, broker, topic_prefix, chat):
    _, base_url = chat
    settings = NotegenSettings(data_dir=tmp_path, kafka_bootstrap=broker, topic_prefix=topic_prefix,
                               shutdown_grace_s=5, llm_base_url=base_url, llm_model="test-model",
                               llm_api_key="sk-local-test", llm_timeout_s=1.0)
    service = await build_service(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}")
    yield notegen_pb2_grpc.NoteGenServiceStub(channel)
    await channel.close()
    await service.runtime.shutdown("test over")


def _request() -> pb.GenerateNoteRequest:
    return pb.GenerateNoteRequest(
        transcript=types.Transcript(
            language="en",
            segments=[
                types.TranscriptSegment(
                    start_ms=i * 4000, end_ms=i * 4000 + 3500, text=text,
                    speaker=types.SPEAKER_DOCTOR if who == "doctor" else types.SPEAKER_PATIENT,
                )
                for i, (who, text) in enumerate(LINES)
            ],
        ),
        domain="veterinary",
    )


def _text(response: pb.GenerateNoteResponse) -> str:
    return " ".join(section.content for section in response.sections)


async def test_a_good_answer_is_the_note_and_the_request_is_well_formed(chat, notegen):
    server, _ = chat
    response = await notegen.GenerateNote(_request())
    assert response.generator == "llm:test-model"
    by_label = {section.label: section for section in response.sections}
    assert list(by_label) == ["chief_complaint", "physical_exam", "prescriptions", "follow_up"]
    assert by_label["prescriptions"].content == "Metronidazole 250 milligrams twice a day for five days."
    assert list(by_label["prescriptions"].source_segments) == [3]
    assert by_label["physical_exam"].title == title_for("physical_exam", "en")
    [sent] = server.requests
    assert sent["auth"] == "Bearer sk-local-test"
    body = sent["body"]
    assert body["model"] == "test-model" and body["response_format"]["type"] == "json_schema"
    assert "[3] doctor" in body["messages"][1]["content"]


async def test_an_invented_fact_is_dropped_and_the_rest_kept(chat, notegen):
    server, _ = chat
    server.mode = "invented"
    response = await notegen.GenerateNote(_request())
    assert response.generator == "llm:test-model"
    text = _text(response)
    assert "Metronidazole 250" in text
    assert "Amoxicillin" not in text and "41.2" not in text and "Hospitalise" not in text
    assert [section.label for section in response.sections] == ["chief_complaint", "prescriptions"]


@pytest.mark.parametrize("mode", ["malformed", "timeout", "error", "wrong_shape"])
async def test_any_failure_falls_back_to_the_offline_generator(chat, notegen, mode):
    server, _ = chat
    server.mode = mode
    response = await notegen.GenerateNote(_request())
    assert response.generator == "rules-v1"
    assert "metronidazole" in _text(response).lower()
    assert len(server.requests) == 1


async def test_too_short_is_decided_before_asking_the_model(chat, notegen):
    server, _ = chat
    request = pb.GenerateNoteRequest(transcript=types.Transcript(language="en", segments=[
        types.TranscriptSegment(start_ms=0, end_ms=900, text="Good morning!"),
        types.TranscriptSegment(start_ms=1000, end_ms=2000, text="Good morning, doctor."),
    ]))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await notegen.GenerateNote(request)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.requests == []
