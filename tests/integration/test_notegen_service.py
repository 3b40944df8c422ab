"""Note generation over the real broker and gRPC, on SQLite and PostgreSQL: one note per run."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from sqlalchemy import func, select

from common.events import timestamp
from common.grpc_errors import from_rpc_error
from common.db import utcnow
from scribe.events.v1 import events_pb2 as ev
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.models import GenerationRow, SectionRow
from services.notegen.server import build_service
from tests.support.events import collect, publish

LINES = [
    "Good morning, what brings you in today?",
    "My dog Rex has been vomiting for three days and he will not eat.",
    "His temperature is thirty nine point five degrees and he weighs twelve kilos.",
    "I will prescribe metronidazole two hundred milligrams twice a day for five days.",
    "Come back in one week for a follow up visit.",
]


def transcript(lines: list[str], language: str = "en") -> types.Transcript:
    return types.Transcript(
        language=language,
        duration_ms=len(lines) * 4000,
        segments=[types.TranscriptSegment(start_ms=i * 4000, end_ms=i * 4000 + 3500, text=t) for i, t in enumerate(lines)],
    )


@pytest.fixture
async def notegen(tmp_path, broker, database_url, topic_prefix):
    settings = NotegenSettings(data_dir=tmp_path, database_url=database_url, kafka_bootstrap=broker,
                               topic_prefix=topic_prefix, shutdown_grace_s=5)
    service = await build_service(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}")
    yield service, notegen_pb2_grpc.NoteGenServiceStub(channel)
    await channel.close()
    await service.runtime.shutdown("test over")


async def test_transcript_becomes_one_note_even_when_redelivered(notegen, broker, topic_prefix):
    service, _ = notegen
    note_id = str(uuid.uuid4())
    run = types.RunRef(run_id=str(uuid.uuid4()), attempt=1, requested_at=timestamp(utcnow()))
    completed = ev.TranscriptionCompleted(run=run, transcript=transcript(LINES))
    first = await publish(broker, topic_prefix, completed, tenant_id="t1", note_id=note_id)
    generated = await collect(broker, topic_prefix, ev.NoteGenerated, at_least=1)
    assert len(generated) == 1
    note = generated[0].payload
    labels = [s.label for s in note.sections]
    assert "prescriptions" in labels and "follow_up" in labels
    prescriptions = next(s for s in note.sections if s.label == "prescriptions")
    assert "metronidazole" in prescriptions.content.lower()
    assert [s.order for s in note.sections] == sorted(s.order for s in note.sections)

    # The same event again is a no-op; a re-driven one (new id) repeats the stored outcome.
    await publish(broker, topic_prefix, completed, tenant_id="t1", note_id=note_id, envelope=first)
    await publish(broker, topic_prefix, completed, tenant_id="t1", note_id=note_id)
    again = await collect(broker, topic_prefix, ev.NoteGenerated, at_least=2, timeout_s=30)
    await asyncio.sleep(1.0)
    assert len(again) == 2
    assert [s.id for s in again[1].payload.sections] == [s.id for s in note.sections]
    async with service.handlers.session_maker() as session:
        assert await session.scalar(select(func.count()).select_from(GenerationRow)) == 1
        assert await session.scalar(select(func.count()).select_from(SectionRow)) == len(note.sections)


async def test_greetings_only_fails_too_short(notegen, broker, topic_prefix):
    _, stub = notegen
    note_id = str(uuid.uuid4())
    run = types.RunRef(run_id=str(uuid.uuid4()), attempt=1, requested_at=timestamp(utcnow()))
    await publish(broker, topic_prefix, ev.TranscriptionCompleted(run=run, transcript=transcript(["Hello.", "Good morning!"])),
                  tenant_id="t1", note_id=note_id)
    failed = await collect(broker, topic_prefix, ev.NoteGenerationFailed, at_least=1)
    assert failed[0].payload.failure.code == "TRANSCRIPT_TOO_SHORT"
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await stub.GenerateNote(pb.GenerateNoteRequest(transcript=transcript(["Hello.", "Thank you!"])))
    assert rejected.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(rejected.value).code == "TRANSCRIPT_TOO_SHORT"


async def test_generate_note_rpc_in_portuguese(notegen):
    _, stub = notegen
    response = await stub.GenerateNote(pb.GenerateNoteRequest(transcript=transcript([
        "O cachorro está vomitando há três dias e não come.",
        "A temperatura é de trinta e nove graus e o peso é doze quilos.",
        "Vou receitar amoxicilina duas vezes ao dia por sete dias.",
        "Retorno em uma semana.",
    ], language="pt")))
    assert response.language == "pt"
    titles = {s.label: s.title for s in response.sections}
    assert titles.get("follow_up") == "Retorno"
    assert "amoxicilina" in next(s.content for s in response.sections if s.label == "prescriptions").lower()
