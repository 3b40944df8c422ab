"""Transcription service with the real model, broker and gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import wave
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from common.blobcrypto import Keyring
from common.blobstore import LocalBlobStore
from common.db import utcnow
from common.events import timestamp
from common.grpc_errors import from_rpc_error
from scribe.events.v1 import events_pb2 as ev
from scribe.transcription.v1 import transcription_pb2 as pb
from scribe.transcription.v1 import transcription_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.transcription.config import TranscriptionSettings
from services.transcription.engine import TranscriptionCancelled
from services.transcription.models import MESSAGING, JobRow
from services.transcription.server import build_service, load_engine
from tests.support.blobs import put_audio_file
from tests.support.events import collect, publish
from tests.support.speech import concat_wavs, make_silence, make_white_noise, synthesize

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine(TranscriptionSettings(data_dir=tmp_path_factory.mktemp("engine")))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return synthesize("The dog has a fever and a cough since Monday.", "en",
                      tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """One cache of the voice encoder's converted weights for the module's services."""
    return tmp_path_factory.mktemp("voice-encoder")


@pytest.fixture(scope="module")
def consultation(tmp_path_factory) -> tuple[Path, list[tuple[str, int, int]]]:
    """A vet (female voice) and an owner (male voice) taking turns: (wav, [(role, start_ms, end_ms)])."""
    folder = tmp_path_factory.mktemp("consultation")
    turns = [
        ("doctor", "Good morning. What brings you and Max in today?"),
        ("patient", "Hi doctor. He has been limping on his back leg since yesterday, and he cried when I touched it."),
        ("doctor", "Let me examine the leg. His temperature is thirty eight point five degrees, and he weighs "
                   "twenty kilos."),
        ("patient", "Is it serious? He jumped off the sofa on Sunday, and he has not eaten much since then."),
        ("doctor", "It looks like a sprain. I will prescribe an anti inflammatory, one tablet by mouth once a day "
                   "for five days. Come back in one week if he is still limping."),
        ("patient", "Okay, once a day for five days. Thank you, doctor."),
    ]  # fmt: skip
    voices = {"doctor": ("en-us+f3", 155), "patient": ("en-us+m3", 162)}
    gap_ms = 600
    paths, spans, at = [], [], 0
    for i, (role, text) in enumerate(turns):
        voice, wpm = voices[role]
        path = synthesize(text, "en", folder / f"turn{i}.wav", voice=voice, speed_wpm=wpm)
        with wave.open(str(path), "rb") as w:
            length_ms = w.getnframes() * 1000 // w.getframerate()
        spans.append((role, at, at + length_ms))
        at += length_ms + gap_ms
        paths.append(path)
    return concat_wavs(paths, folder / "consultation.wav", gap_ms=gap_ms), spans


@pytest.fixture
async def transcription(tmp_path, broker, database_url, topic_prefix, engine, weights_dir):
    settings = TranscriptionSettings(data_dir=tmp_path, database_url=database_url, kafka_bootstrap=broker,
                                     topic_prefix=topic_prefix, shutdown_grace_s=5,
                                     diarization_weights_dir=weights_dir, progress_interval_s=0.2)
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
    service, _, _ = transcription
    blob_key = "t1/note/audio.wav"
    await put_audio_file(service.handlers.blobs, blob_key, speech)
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


async def test_a_consultation_gets_doctor_and_patient_roles_and_reports_progress(
    transcription, broker, topic_prefix, consultation
):
    service, _, _ = transcription
    audio, turns = consultation
    blob_key = "t1/consultation/audio.wav"
    await put_audio_file(service.handlers.blobs, blob_key, audio)
    note_id = str(uuid.uuid4())
    event = ingested(blob_key)
    event.audio.duration_ms = turns[-1][2]
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=note_id)

    completed = await collect(broker, topic_prefix, ev.TranscriptionCompleted, at_least=1)
    segments = completed[0].payload.transcript.segments
    roles = {types.SPEAKER_DOCTOR: "doctor", types.SPEAKER_PATIENT: "patient"}
    assert {s.speaker for s in segments} == set(roles)
    # Each turn's speech time is mostly given to the right speaker.
    for role, start, end in turns:
        heard: dict[str, int] = {}
        for s in segments:
            overlap = min(end, s.end_ms) - max(start, s.start_ms)
            if overlap > 0:
                heard[roles.get(s.speaker, "unspecified")] = heard.get(roles.get(s.speaker, "unspecified"), 0) + overlap
        assert max(heard, key=heard.get) == role, (role, start, end, heard)
    # A segment is cut where the speaker changes: none holds more than a second of two speakers'
    # turns (Whisper's segment and word times may start a few hundred ms early).
    for s in segments:
        assert len({role for role, start, end in turns if min(end, s.end_ms) - max(start, s.start_ms) > 1000}) <= 1

    # Progress while it ran: more than 0, less than 1, never decreasing, about this run.
    progress = await collect(broker, topic_prefix, ev.TranscriptionProgress, at_least=1, timeout_s=5)
    values = [p.payload.progress for p in progress]
    assert values and all(0 < v < 1 for v in values) and values == sorted(values)
    assert all(p.payload.run.run_id == event.run.run_id and p.envelope.note_id == note_id for p in progress)
    assert progress[-1].payload.duration_ms == turns[-1][2]


@pytest.mark.parametrize("make", [make_silence, make_white_noise])
async def test_a_minute_of_silence_or_noise_fails_with_no_speech(transcription, broker, topic_prefix, make, tmp_path):
    service, _, _ = transcription
    blob_key = "t1/silent/audio.wav"
    await put_audio_file(service.handlers.blobs, blob_key, make(tmp_path / "silent.wav", 60))
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
    # Segments as they are decoded, a progress-only message at the end of each chunk of audio, and
    # last the whole transcript with speaker roles (one voice: all doctor).
    assert {i.WhichOneof("item") for i in items[1:-1]} <= {"segment", None}
    assert items[-1].WhichOneof("item") == "transcript"
    final = items[-1].transcript
    assert final.language == "en" and final.segments
    assert {s.speaker for s in final.segments} == {types.SPEAKER_DOCTOR}
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


async def test_stored_audio_is_read_decrypted_and_a_foreign_key_fails_clearly(
    transcription, broker, topic_prefix, speech
):
    service, stub, settings = transcription
    await put_audio_file(service.handlers.blobs, "t1/stored/audio.wav", speech)
    request = pb.TranscribeRequest(blob_key="t1/stored/audio.wav", language_hint="en")
    items = [item async for item in stub.Transcribe(request)]
    assert "dog" in " ".join(s.text for s in items[-1].transcript.segments).lower()

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        async for _ in stub.Transcribe(pb.TranscribeRequest(blob_key="t1/missing/audio.wav")):
            pass
    assert from_rpc_error(missing.value).code == "AUDIO_NOT_FOUND"

    # An object written under a key this service does not hold: refused at once, never decoded.
    foreign = LocalBlobStore(settings.resolved_blob_dir(), Keyring(os.urandom(32)))
    await put_audio_file(foreign, "t1/foreign/audio.wav", speech)
    with pytest.raises(grpc.aio.AioRpcError) as unreadable:
        async for _ in stub.Transcribe(pb.TranscribeRequest(blob_key="t1/foreign/audio.wav")):
            pass
    assert from_rpc_error(unreadable.value).code == "AUDIO_UNREADABLE"
    event = ingested("t1/foreign/audio.wav")
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=str(uuid.uuid4()))
    failed = await collect(broker, topic_prefix, ev.TranscriptionFailed, at_least=1)
    assert failed[0].payload.failure.code == "AUDIO_UNREADABLE"
    assert not list(service.handlers.blobs.staging_dir().iterdir())  # no decrypted copy left behind


async def test_a_deleted_note_s_running_job_stops_publishes_nothing_and_stays_gone(
    transcription, broker, topic_prefix, speech, monkeypatch
):
    service, stub, _ = transcription
    handlers = service.handlers
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def until_stopped(path, language, on_segment, should_stop, *args, **kwargs):
        """A transcription that runs until it is told to stop (what the engine does between segments)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if should_stop():
                loop.call_soon_threadsafe(stopped.set)
                raise TranscriptionCancelled()
            time.sleep(0.02)
        raise AssertionError("never told to stop")

    monkeypatch.setattr(handlers, "_transcribe", until_stopped)
    note_id = str(uuid.uuid4())
    blob_key = f"t1/{note_id}/audio.wav"
    await put_audio_file(handlers.blobs, blob_key, speech)
    event = ingested(blob_key)
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=note_id)
    await collect(broker, topic_prefix, ev.TranscriptionStarted, at_least=1)

    await publish(broker, topic_prefix, ev.NoteDeleted(deleted_at=timestamp(utcnow())), tenant_id="t1",
                  note_id=note_id)
    await asyncio.wait_for(stopped.wait(), 30)

    # The same run asked for again (a re-drive) after the deletion queues nothing.
    main_consumer = next(c for c in service.messaging.consumers if ev.AudioIngested in c.handlers)
    await publish(broker, topic_prefix, event, tenant_id="t1", note_id=note_id)
    for _ in range(400):
        if main_consumer.applied_total >= 2:
            break
        await asyncio.sleep(0.05)
    assert main_consumer.applied_total >= 2
    async with handlers.session_maker() as session:
        assert await session.scalar(select(func.count()).where(JobRow.note_id == note_id)) == 0
        outbox = MESSAGING.outbox  # TranscriptionStarted and the like: gone with the note
        assert await session.scalar(select(func.count()).where(outbox.c.message_key == note_id)) == 0
    for outcome in (ev.TranscriptionCompleted, ev.TranscriptionFailed):
        assert await collect(broker, topic_prefix, outcome, at_least=1, timeout_s=1) == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetTranscript(pb.GetTranscriptRequest(tenant_id="t1", note_id=note_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
