"""Ingestion over real gRPC, the real broker, SQLite and PostgreSQL: all-or-nothing uploads."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select, update

from common.events import decode, topic_for
from common.grpc_errors import from_rpc_error
from scribe.events.v1 import events_pb2 as ev
from scribe.ingestion.v1 import ingestion_pb2 as pb
from scribe.ingestion.v1 import ingestion_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.ingestion.config import IngestionSettings
from services.ingestion.models import MESSAGING, UploadRow
from services.ingestion.server import build_service
from tests.support.audio import write_tone
from tests.support.events import collect, publish
from tests.support.s3 import blob_location, s3_endpoint  # noqa: F401 (s3_endpoint: a fixture)


@pytest.fixture
async def ingestion(tmp_path: Path, broker: str, database_url: str, topic_prefix: str):
    settings = IngestionSettings(
        data_dir=tmp_path,
        database_url=database_url,
        kafka_bootstrap=broker,
        topic_prefix=topic_prefix,
        max_upload_bytes=200_000,
        shutdown_grace_s=5,
    )
    service = await build_service(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}")
    yield service, ingestion_pb2_grpc.IngestionServiceStub(channel), settings
    await channel.close()
    await service.runtime.shutdown("test over")


def _requests(data: bytes, tenant: str = "tenant-a", chunk: int = 16384):
    yield pb.UploadAudioRequest(
        metadata=pb.UploadMetadata(
            tenant_id=tenant,
            note=types.NoteInfo(name="Rex", gender="male", external_id="EXT-1",
                                metadata=[types.MetadataItem(key="vet", value="Dr. Silva")]),
            filename="consulta.wav",
            content_type="audio/wav",
        )
    )
    for start in range(0, len(data), chunk):
        yield pb.UploadAudioRequest(chunk=data[start : start + chunk])


async def _events(broker: str, topic: str, expect: int, timeout_ms: int = 5000) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found = []
        batch = await consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            found.extend(decode(r.value) for r in records)
        return found
    finally:
        await consumer.stop()


async def _counts(service) -> tuple[int, int]:
    async with service.handlers.session_maker() as session:
        rows = await session.scalar(select(func.count()).select_from(UploadRow))
    blobs = [p for p in service.handlers.blobs.root.rglob("*") if p.is_file() and ".staging" not in p.parts]
    return rows, len(blobs)


async def test_upload_stores_blob_row_and_event(ingestion, broker, topic_prefix, tmp_path):
    service, stub, _ = ingestion
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    response = await stub.UploadAudio(_requests(data))
    upload = response.upload
    assert upload.status == types.NOTE_STATUS_PENDING
    assert upload.audio.content_type == "audio/wav"
    assert 1900 <= upload.audio.duration_ms <= 2100
    assert upload.audio.size_bytes == len(data)
    assert await _counts(service) == (1, 1)

    events = await _events(broker, topic_for(ev.AudioIngested, topic_prefix), 1)
    assert [e.envelope.note_id for e in events] == [upload.note_id]
    assert events[0].envelope.tenant_id == "tenant-a"
    assert events[0].payload.note.name == "Rex"
    assert events[0].payload.audio.blob_key == upload.audio.blob_key

    fetched = await stub.GetUpload(pb.GetUploadRequest(tenant_id="tenant-a", note_id=upload.note_id))
    assert fetched.upload.note_id == upload.note_id
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetUpload(pb.GetUploadRequest(tenant_id="tenant-b", note_id=upload.note_id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert from_rpc_error(denied.value).code == "NOTE_ACCESS_DENIED"


@pytest.mark.parametrize(
    "payload, status, code",
    [
        (b"this is a text file, not audio at all" * 50, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUDIO_FORMAT"),
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUDIO_FORMAT"),
        (b"RIFF" + b"\0" * 300_000, grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE"),
    ],
    ids=["not-audio", "empty", "over-limit"],
)
async def test_rejected_upload_leaves_nothing(ingestion, broker, topic_prefix, payload, status, code):
    service, stub, _ = ingestion
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await stub.UploadAudio(_requests(payload))
    assert rejected.value.code() == status
    assert from_rpc_error(rejected.value).code == code
    assert await _counts(service) == (0, 0)
    assert not list(service.handlers.blobs.staging_dir().iterdir())
    assert await _events(broker, topic_for(ev.AudioIngested, topic_prefix), 0, timeout_ms=1000) == []


async def test_metadata_must_come_first(ingestion):
    _, stub, _ = ingestion

    def requests():
        yield pb.UploadAudioRequest(chunk=b"abc")

    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await stub.UploadAudio(requests())
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _wait_status(stub, note_id: str, status: int, tenant: str = "tenant-a") -> pb.Upload:
    # Generous: the broker hands partitions to a re-joining consumer group only after ~15 s.
    for _ in range(800):
        upload = (await stub.GetUpload(pb.GetUploadRequest(tenant_id=tenant, note_id=note_id))).upload
        if upload.status == status:
            return upload
        await asyncio.sleep(0.05)
    raise AssertionError(f"note never reached status {status}")


async def test_retry_starts_one_new_run_and_refuses_while_processing(ingestion, broker, topic_prefix, tmp_path):
    service, stub, _ = ingestion
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    upload = (await stub.UploadAudio(_requests(data))).upload
    note_id = upload.note_id

    # The first run ends (its NoteGenerated reaches ingestion's consumer): completed, retry allowed.
    await publish(broker, topic_prefix, ev.NoteGenerated(run=upload.run), tenant_id="tenant-a", note_id=note_id)
    await _wait_status(stub, note_id, types.NOTE_STATUS_COMPLETED)

    # Two retries at once: one starts run 2, the other is told a transcription is in progress.
    results = await asyncio.gather(
        *(stub.RequestRetry(pb.RequestRetryRequest(tenant_id="tenant-a", note_id=note_id)) for _ in range(2)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) == 1 and len(refused) == 1, results
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(refused[0]).code == "TRANSCRIPTION_IN_PROGRESS"
    retried = accepted[0].upload
    assert (retried.status, retried.run.attempt) == (types.NOTE_STATUS_PROCESSING, 2)
    assert retried.run.run_id != upload.run.run_id and retried.audio.blob_key == upload.audio.blob_key

    requested = await collect(broker, topic_prefix, ev.TranscriptionRequested, at_least=1)
    assert [(e.payload.run.run_id, e.payload.reason) for e in requested] == [(retried.run.run_id, "retry")]
    assert requested[0].payload.audio.blob_key == upload.audio.blob_key
    assert requested[0].payload.note.name == "Rex"

    # A late terminal event of the superseded run 1 changes nothing; run 2's own ends it.
    await publish(broker, topic_prefix, ev.TranscriptionFailed(run=upload.run), tenant_id="tenant-a", note_id=note_id)
    await publish(
        broker, topic_prefix,
        ev.TranscriptionFailed(run=retried.run, failure=types.Failure(code="NO_SPEECH", message="x")),
        tenant_id="tenant-a", note_id=note_id,
    )
    failed = await _wait_status(stub, note_id, types.NOTE_STATUS_FAILED)
    assert failed.run.attempt == 2
    again = (await stub.RequestRetry(pb.RequestRetryRequest(tenant_id="tenant-a", note_id=note_id))).upload
    assert again.run.attempt == 3


async def test_retry_from_pending_and_of_unknown_or_foreign_notes(ingestion, broker, topic_prefix, tmp_path):
    _, stub, _ = ingestion
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    upload = (await stub.UploadAudio(_requests(data))).upload
    retried = (await stub.RequestRetry(pb.RequestRetryRequest(tenant_id="tenant-a", note_id=upload.note_id))).upload
    assert (retried.status, retried.run.attempt) == (types.NOTE_STATUS_PROCESSING, 2)

    # Once run 2's transcription has started, ingestion still says processing and refuses retries.
    await publish(broker, topic_prefix, ev.TranscriptionStarted(run=retried.run), tenant_id="tenant-a",
                  note_id=upload.note_id)
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await stub.RequestRetry(pb.RequestRetryRequest(tenant_id="tenant-a", note_id=upload.note_id))
    assert from_rpc_error(busy.value).code == "TRANSCRIPTION_IN_PROGRESS"

    for tenant, note_id, status, code in [
        ("tenant-b", upload.note_id, grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED"),
        ("tenant-a", "6a4fe1de-52c4-4b2b-a30f-4b3fa9d7d8b3", grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RequestRetry(pb.RequestRetryRequest(tenant_id=tenant, note_id=note_id))
        assert (refused.value.code(), from_rpc_error(refused.value).code) == (status, code)


async def test_a_started_transcription_marks_the_note_processing(ingestion, broker, topic_prefix, tmp_path):
    _, stub, _ = ingestion
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    upload = (await stub.UploadAudio(_requests(data))).upload
    await publish(broker, topic_prefix, ev.TranscriptionStarted(run=upload.run), tenant_id="tenant-a",
                  note_id=upload.note_id)
    await _wait_status(stub, upload.note_id, types.NOTE_STATUS_PROCESSING)


# -- deletion ------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
async def deleting_ingestion(request, tmp_path: Path, broker: str, database_url: str, topic_prefix: str):
    """Ingestion over a local blob folder or a bucket of the local S3 server."""
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    settings = IngestionSettings(
        **blob_location(request.param, tmp_path, endpoint),
        database_url=database_url,
        kafka_bootstrap=broker,
        topic_prefix=topic_prefix,
        max_upload_bytes=200_000,
        shutdown_grace_s=5,
    )
    service = await build_service(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}")
    yield service, ingestion_pb2_grpc.IngestionServiceStub(channel)
    await channel.close()
    await service.runtime.shutdown("test over")


async def _upload_row(service, note_id: str) -> UploadRow:
    async with service.handlers.session_maker() as session:
        row = await session.get(UploadRow, note_id)
    assert row is not None
    return row


async def test_delete_removes_the_audio_keeps_a_tombstone_and_announces_it_once(
    deleting_ingestion, broker, topic_prefix, tmp_path
):
    service, stub = deleting_ingestion
    blobs = service.handlers.blobs
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    upload = (await stub.UploadAudio(_requests(data))).upload
    kept = (await stub.UploadAudio(_requests(data))).upload
    note_id = upload.note_id
    assert await blobs.exists(upload.audio.blob_key)

    # Another tenant can neither delete it nor learn more than that it is not theirs.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.DeleteNote(pb.DeleteNoteRequest(tenant_id="tenant-b", note_id=note_id))
    assert from_rpc_error(denied.value).code == "NOTE_ACCESS_DENIED"
    assert await blobs.exists(upload.audio.blob_key)

    deleted = await stub.DeleteNote(pb.DeleteNoteRequest(tenant_id="tenant-a", note_id=note_id))
    assert (deleted.note_id, deleted.audio_removed) == (note_id, True)
    assert not await blobs.exists(upload.audio.blob_key)
    assert await blobs.exists(kept.audio.blob_key)
    row = await _upload_row(service, note_id)
    assert (row.status, row.blob_pending_delete, row.name, row.external_id, row.metadata_items, row.filename) == (
        "deleted", False, "", "", [], ""
    )
    async with service.handlers.session_maker() as session:  # AudioIngested (name, metadata) is gone
        outbox = MESSAGING.outbox
        kinds = (await session.scalars(select(outbox.c.topic).where(outbox.c.message_key == note_id))).all()
    assert kinds == [topic_for(ev.NoteDeleted, topic_prefix)]

    # Deleted means gone for every RPC, and a second deletion changes nothing.
    for call in (stub.GetUpload(pb.GetUploadRequest(tenant_id="tenant-a", note_id=note_id)),
                 stub.RequestRetry(pb.RequestRetryRequest(tenant_id="tenant-a", note_id=note_id)),
                 stub.DeleteNote(pb.DeleteNoteRequest(tenant_id="tenant-a", note_id=note_id))):
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await call
        assert (gone.value.code(), from_rpc_error(gone.value).code) == (grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND")
    events = await collect(broker, topic_prefix, ev.NoteDeleted, at_least=2, timeout_s=2)  # one, not two
    assert [(e.envelope.note_id, e.envelope.tenant_id) for e in events] == [(note_id, "tenant-a")]

    # A terminal event still in flight for the deleted note does not bring it back.
    await publish(broker, topic_prefix, ev.NoteGenerated(run=upload.run), tenant_id="tenant-a", note_id=note_id)
    await publish(broker, topic_prefix, ev.NoteGenerated(run=kept.run), tenant_id="tenant-a", note_id=kept.note_id)
    await _wait_status(stub, kept.note_id, types.NOTE_STATUS_COMPLETED)
    assert (await _upload_row(service, note_id)).status == "deleted"


async def test_audio_a_failing_store_kept_is_removed_by_the_sweep(ingestion, tmp_path, caplog):
    service, stub, _ = ingestion
    handlers = service.handlers
    data = write_tone(tmp_path / "tone.wav", seconds=2).read_bytes()
    upload = (await stub.UploadAudio(_requests(data))).upload
    real_delete = handlers.blobs.delete

    async def unreachable(key: str) -> None:
        raise ConnectionError("store down: http://user:secret@s3.example")

    handlers.blobs.delete = unreachable
    deleted = await stub.DeleteNote(pb.DeleteNoteRequest(tenant_id="tenant-a", note_id=upload.note_id))
    assert not deleted.audio_removed  # the note is deleted all the same
    row = await _upload_row(service, upload.note_id)
    assert (row.status, row.blob_pending_delete, row.blob_delete_attempts) == ("deleted", True, 1)
    assert await handlers.blobs.exists(upload.audio.blob_key)
    assert "secret" not in caplog.text

    # Backing off: a pass right after the failure leaves it; one after the back-off removes it.
    assert await handlers.sweep_deleted_blobs_once() == 0
    handlers.blobs.delete = real_delete
    async with handlers.session_maker() as session, session.begin():
        await session.execute(
            update(UploadRow).where(UploadRow.note_id == upload.note_id)
            .values(last_driven_at=row.last_driven_at - dt.timedelta(hours=1))
        )
    assert await handlers.sweep_deleted_blobs_once() == 1
    assert not await handlers.blobs.exists(upload.audio.blob_key)
    assert not (await _upload_row(service, upload.note_id)).blob_pending_delete
    assert await handlers.sweep_deleted_blobs_once() == 0
