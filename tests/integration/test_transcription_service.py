"""Transcription service with the real model, broker and gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from common.db import utcnow
from common.events import timestamp
from common.grpc_errors import from_rpc_error
from scribe.events.v1 import events_pb2 as ev
from scribe.transcription.v1 import transcription_pb2 as pb
from scribe.transcription.v1 import transcription_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.transcription.config import TranscriptionSettings
from services.transcription.models import JobRow
from services.transcription.server import build_service, load_engine
from tests.support.events import collect, publish
from tests.support.speech import make_silence, make_white_noise, synthesize

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine(TranscriptionSettings(data_dir=tmp_path_factory.mktemp("engine")))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return synthesize("The dog has a fever and a cough since Monday.", "en",
                      tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture
async def transcription(tmp_path, broker, database_url, topic_prefix, engine):
    settings = TranscriptionSettings(data_dir=tmp_path, database_url=database_url, kafka_bootstrap=broker,
                                     topic_prefix=topic_prefix, shutdown_grace_s=5)
    service = await build_service(settings, engine=engine)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}")
    yield service, transcription_pb2_grpc.TranscriptionServiceStub(channel), settings
    await channel.close()
    await service.runtime.shutdown("test over")


def ingested(blob_key: str, language: str = "en") -> ev.AudioIngested:
    return ev.AudioIngested(
        run=types.RunRef(run_id=str(uuid.uuid4()), attempt=1, requested_at=timestamp(utcnow())),
        audio=types.AudioRef(blob_key=blob_key, content_type="audio/wav"),
        note=types.NoteInfo(name="Rex", language_hint=language),
    )


async def test_ingested_audio_is_transcribed_once(transcription, broker, topic_prefix, speech):
    service, _, settings = transcription
    blob_key = "t1/note/audio.wav"
    target = settings.resolved_blob_dir() / blob_key
    target.parent.mkdir(parents=True)
    shutil.copy(speech, target)
    note_id = str(uuid.uuid4())
    event = ingested(blob_key)
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=note_id)

    started = await collect(broker, topic_prefix, ev.TranscriptionStarted, at_least=1)
    assert started[0].envelope.note_id == note_id
    completed = await collect(broker, topic_prefix, ev.TranscriptionCompleted, at_least=1)
    transcript = completed[0].payload.transcript
    assert transcript.language == "en"
    text = " ".join(s.text for s in transcript.segments).lower()
    assert "dog" in text and "fever" in text
    assert all(0 <= s.start_ms <= s.end_ms <= transcript.duration_ms for s in transcript.segments)
    # Word timestamps and a per-segment confidence (exp of the mean token log-probability).
    for segment in transcript.segments:
        assert 0 < segment.confidence <= 1
        assert segment.words and " ".join(w.text for w in segment.words) == segment.text
        assert all(segment.start_ms <= w.start_ms <= w.end_ms <= segment.end_ms for w in segment.words)
        assert all(0 <= w.probability <= 1 for w in segment.words)
    assert "fever" in [w.text.strip(",.").lower() for s in transcript.segments for w in s.words]

    # A re-driven event (new id, same run) answers with the stored transcript, no second job.
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=note_id)
    again = await collect(broker, topic_prefix, ev.TranscriptionCompleted, at_least=2, timeout_s=30)
    assert len(again) == 2 and again[1].payload.transcript == transcript
    async with service.handlers.session_maker() as session:
        assert await session.scalar(select(func.count()).select_from(JobRow)) == 1


@pytest.mark.parametrize("make", [make_silence, make_white_noise])
async def test_a_minute_of_silence_or_noise_fails_with_no_speech(transcription, broker, topic_prefix, make):
    service, _, settings = transcription
    blob_key = "t1/silent/audio.wav"
    target = settings.resolved_blob_dir() / blob_key
    target.parent.mkdir(parents=True)
    make(target, 60)
    event = ingested(blob_key, language="")
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=str(uuid.uuid4()))
    failed = await collect(broker, topic_prefix, ev.TranscriptionFailed, at_least=1)
    assert failed[0].payload.failure.code == "NO_SPEECH"
    # Nothing invented: no transcript announced, none stored.
    assert await collect(broker, topic_prefix, ev.TranscriptionCompleted, at_least=1, timeout_s=2) == []
    async with service.handlers.session_maker() as session:
        job = await session.get(JobRow, event.run.run_id)
    assert job.status == "failed" and job.segments == []


async def test_transcribe_rpc_streams_info_then_segments(transcription, speech):
    _, stub, _ = transcription
    items = [item async for item in stub.Transcribe(pb.TranscribeRequest(audio=speech.read_bytes(), language_hint="en"))]
    assert items[0].WhichOneof("item") == "info" and items[0].info.language == "en"
    # Segments as they are decoded, and a progress-only message at the end of each chunk of audio.
    assert {i.WhichOneof("item") for i in items[1:]} <= {"segment", None}
    segments = [i.segment for i in items[1:] if i.HasField("segment")]
    assert segments and "dog" in " ".join(s.text for s in segments).lower()
    assert all(s.words for s in segments)
    progress = [i.progress for i in items[1:]]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)

    # Without a hint the language is detected.
    items = [item async for item in stub.Transcribe(pb.TranscribeRequest(audio=speech.read_bytes()))]
    assert items[0].info.language == "en" and items[0].info.language_probability > 0.5

    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        async for _ in stub.Transcribe(pb.TranscribeRequest(audio=b"not audio at all" * 100)):
            pass
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(rejected.value).code == "INVALID_AUDIO_FORMAT"
