"""The query read model over real gRPC, the real broker, SQLite and PostgreSQL.

Events are published the way services publish them (envelopes on per-type topics, keyed by note id)
and the gRPC API is polled until they are projected. One query service (and one ingestion service
whose broker does not exist, so its events never reach query) is shared by the tests of a backend:
starting and stopping one takes seconds. Each test works in a tenant of its own, which is also what
isolates it from the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message

from common.broker import free_port
from common.events import from_timestamp, timestamp
from common.grpc_errors import from_rpc_error
from scribe.events.v1 import events_pb2 as ev
from scribe.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from scribe.query.v1 import query_pb2 as pb
from scribe.query.v1 import query_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.ingestion.config import IngestionSettings
from services.ingestion.server import build_service as build_ingestion
from services.query.config import QuerySettings
from services.query.server import QueryService, build_service
from tests.conftest import _fresh_postgres_database, _require_postgres
from tests.support.audio import write_tone
from tests.support.event_publisher import EventPublisher, wait_consumed

pytestmark = pytest.mark.asyncio(loop_scope="module")

PENDING = types.NOTE_STATUS_PENDING
PROCESSING = types.NOTE_STATUS_PROCESSING
COMPLETED = types.NOTE_STATUS_COMPLETED
FAILED = types.NOTE_STATUS_FAILED
READ_YOUR_WRITES_WAIT_S = 0.5


# -- services ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _database(backend: str, directory: Path) -> AsyncIterator[str]:
    """An empty database of ``backend`` for one service."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'service.db'}"
        return
    async for url in _fresh_postgres_database():
        yield url


def _query_settings(directory: Path, database_url: str, broker: str, prefix: str, **overrides) -> QuerySettings:
    values = {
        # A consumer group of its own per service started here: tansu hands a restarted group its
        # partitions only after the previous member's session expires, which would cost seconds.
        "service_name": f"query-{prefix}",
        "data_dir": directory,
        "database_url": database_url,
        "kafka_bootstrap": broker,
        "topic_prefix": prefix,
        "topic_partitions": 3,
        "read_your_writes_wait_s": READ_YOUR_WRITES_WAIT_S,
        "shutdown_grace_s": 2,
    }
    return QuerySettings(**{**values, **overrides})


async def _connected(service: QueryService) -> None:
    # Topics exist once the consumer is connected: events published before would auto-create them.
    await asyncio.wait_for(service.consumer.connected.wait(), 30)


@dataclass
class Stack:
    query: QueryService
    stub: query_pb2_grpc.QueryServiceStub
    ingestion: ingestion_pb2_grpc.IngestionServiceStub
    publisher: EventPublisher
    broker: str

    @property
    def group(self) -> str:
        return self.query.consumer.name


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request, postgres_reason) -> str:
    """Every test of this module runs once on SQLite and once on PostgreSQL."""
    if request.param == "postgres":
        _require_postgres(postgres_reason)
    return request.param


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(backend: str, broker: str, tmp_path_factory) -> AsyncIterator[Stack]:
    directory = tmp_path_factory.mktemp(f"query-{backend}")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with contextlib.AsyncExitStack() as cleanup:
        query_db = await cleanup.enter_async_context(_database(backend, directory / "query"))
        ingestion_db = await cleanup.enter_async_context(_database(backend, directory / "ingestion"))
        # Nothing listens on this broker port: ingestion's events stay in its outbox, as when the
        # relay lags behind a 201, and query can only learn of its uploads by asking it.
        ingestion = await build_ingestion(
            IngestionSettings(
                data_dir=directory / "ingestion",
                database_url=ingestion_db,
                kafka_bootstrap=f"127.0.0.1:{free_port()}",
                topic_prefix=prefix,
                shutdown_grace_s=2,
            )
        )
        cleanup.push_async_callback(ingestion.runtime.shutdown, "tests over")
        query = await build_service(
            _query_settings(
                directory / "query", query_db, broker, prefix, ingestion_addr=f"127.0.0.1:{ingestion.runtime.port}"
            )
        )
        cleanup.push_async_callback(query.runtime.shutdown, "tests over")
        await _connected(query)
        publisher = EventPublisher(broker, prefix)
        await publisher.start()
        cleanup.push_async_callback(publisher.stop)
        query_channel = grpc.aio.insecure_channel(f"127.0.0.1:{query.runtime.port}")
        cleanup.push_async_callback(query_channel.close)
        ingestion_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ingestion.runtime.port}")
        cleanup.push_async_callback(ingestion_channel.close)
        yield Stack(
            query,
            query_pb2_grpc.QueryServiceStub(query_channel),
            ingestion_pb2_grpc.IngestionServiceStub(ingestion_channel),
            publisher,
            broker,
        )


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test: what keeps tests sharing a service apart."""
    return f"tenant-{uuid.uuid4().hex[:12]}"


# -- a note's events -----------------------------------------------------------------------------


SECTIONS = [
    types.NoteSection(id="s-plan", label="plan", title="Plano", content="Dieta leve.", order=5, source_segments=[1]),
    types.NoteSection(
        id="s-cc", label="chief_complaint", title="Queixa principal", content="Vômito.", order=1, source_segments=[0]
    ),
]


@dataclass
class NoteStory:
    """The events of one note, as ingestion, transcription and notegen would make them."""

    tenant_id: str
    name: str = "Rex"
    external_id: str = "EXT-1"
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))
    note_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    run_ids: dict[int, str] = field(default_factory=dict)

    def run(self, attempt: int = 1) -> types.RunRef:
        run_id = self.run_ids.setdefault(attempt, str(uuid.uuid4()))
        requested = self.created_at + dt.timedelta(minutes=attempt - 1)
        return types.RunRef(run_id=run_id, attempt=attempt, requested_at=timestamp(requested))

    def ingested(self, attempt: int = 1) -> ev.AudioIngested:
        return ev.AudioIngested(
            run=self.run(attempt),
            audio=types.AudioRef(blob_key=f"{self.tenant_id}/{self.note_id}/audio.wav", duration_ms=2000),
            note=types.NoteInfo(
                name=self.name,
                gender="male",
                external_id=self.external_id,
                metadata=[types.MetadataItem(key="vet", value="Dr. Silva")],
                language_hint="pt",
            ),
            created_at=timestamp(self.created_at),
        )

    def started(self, attempt: int = 1) -> ev.TranscriptionStarted:
        return ev.TranscriptionStarted(run=self.run(attempt))

    def transcribed(self, attempt: int = 1) -> ev.TranscriptionCompleted:
        # Segments deliberately out of order: the read model answers them sorted by start.
        segments = [
            types.TranscriptSegment(start_ms=900, end_ms=1800, text="Dieta leve.", speaker=types.SPEAKER_DOCTOR),
            types.TranscriptSegment(
                start_ms=0, end_ms=800, text="Ele vomitou.", speaker=types.SPEAKER_PATIENT, confidence=0.9
            ),
        ]
        return ev.TranscriptionCompleted(
            run=self.run(attempt), transcript=types.Transcript(language="pt", duration_ms=2000, segments=segments)
        )

    def generated(self, attempt: int = 1) -> ev.NoteGenerated:
        return ev.NoteGenerated(run=self.run(attempt), language="pt", sections=SECTIONS, generator="rules-v1")

    def transcription_failed(self, attempt: int = 1) -> ev.TranscriptionFailed:
        failure = types.Failure(code="NO_SPEECH", message="No speech was found in the audio")
        return ev.TranscriptionFailed(run=self.run(attempt), failure=failure)


async def _publish(stack: Stack, story: NoteStory, *payloads: Message) -> list[tuple[ev.EventEnvelope, RecordMetadata]]:
    return [
        await stack.publisher.publish(payload, tenant_id=story.tenant_id, note_id=story.note_id)
        for payload in payloads
    ]


async def _note_when(
    stack: Stack, story: NoteStory, predicate: Callable[[pb.NoteView], bool], timeout_s: float = 15
) -> pb.NoteView:
    """Poll GetNote until the projected note satisfies ``predicate``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: object = None
    while True:
        try:
            note = (await stack.stub.GetNote(pb.GetNoteRequest(tenant_id=story.tenant_id, note_id=story.note_id))).note
            if predicate(note):
                return note
            last = note
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            last = exc.code()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"note never matched; last answer: {last}")
        await asyncio.sleep(0.05)


async def _status(stack: Stack, tenant_id: str, note_id: str) -> tuple[int, bool]:
    answer = await stack.stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=tenant_id, note_id=note_id))
    return answer.status, answer.valid


async def _rpc_error(call: Awaitable) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = from_rpc_error(raised.value)
    return error.status, error.code, error.message


# -- projection ----------------------------------------------------------------------------------


async def test_lifecycle_pending_processing_completed(stack: Stack, tenant: str):
    story = NoteStory(tenant)
    await _publish(stack, story, story.ingested())
    note = await _note_when(stack, story, lambda n: n.status == PENDING)
    assert note.info.name == "Rex" and note.info.gender == "male" and note.info.external_id == "EXT-1"
    assert [(m.key, m.value) for m in note.info.metadata] == [("vet", "Dr. Silva")]
    assert from_timestamp(note.created_at) == story.created_at
    assert note.run.attempt == 1 and note.run.run_id == story.run_ids[1]
    assert await _status(stack, tenant, story.note_id) == (PENDING, True)

    await _publish(stack, story, story.started())
    await _note_when(stack, story, lambda n: n.status == PROCESSING)
    assert await _status(stack, tenant, story.note_id) == (PROCESSING, True)

    await _publish(stack, story, story.transcribed())
    note = await _note_when(stack, story, lambda n: n.HasField("transcript"))
    assert note.status == PROCESSING  # until the note is generated
    assert note.language == "pt" and note.transcript.language == "pt" and note.progress == 1.0
    assert [(s.start_ms, s.speaker) for s in note.transcript.segments] == [
        (0, types.SPEAKER_PATIENT),
        (900, types.SPEAKER_DOCTOR),
    ]

    await _publish(stack, story, story.generated())
    note = await _note_when(stack, story, lambda n: n.status == COMPLETED)
    assert [s.label for s in note.sections] == ["chief_complaint", "plan"]
    assert note.sections[0].title == "Queixa principal" and list(note.sections[0].source_segments) == [0]
    assert len(note.transcript.segments) == 2 and not note.HasField("failure")
    assert from_timestamp(note.updated_at) >= from_timestamp(note.created_at)
    assert await _status(stack, tenant, story.note_id) == (COMPLETED, True)

    listed = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant))
    assert listed.total == 1 and listed.notes[0].status == COMPLETED
    assert not listed.notes[0].HasField("transcript") and not listed.notes[0].sections


async def test_out_of_order_events_end_completed_with_note_facts(stack: Stack, tenant: str):
    story = NoteStory(tenant, name="Thor")
    await _publish(stack, story, story.generated())
    note = await _note_when(stack, story, lambda n: n.status == COMPLETED)
    assert note.info.name == "" and len(note.sections) == 2  # created from what NoteGenerated carries

    late = await _publish(stack, story, story.started(), story.ingested(), story.transcribed())
    await wait_consumed(stack.broker, stack.group, [record for _, record in late])
    note = await _note_when(stack, story, lambda n: True)
    assert note.status == COMPLETED
    assert note.info.name == "Thor" and from_timestamp(note.created_at) == story.created_at
    assert len(note.transcript.segments) == 2 and len(note.sections) == 2
    assert await _status(stack, tenant, story.note_id) == (COMPLETED, True)


async def test_redelivered_and_redriven_events_change_nothing(stack: Stack, tenant: str):
    story = NoteStory(tenant)
    published = await _publish(
        stack, story, story.ingested(), story.started(), story.transcribed(), story.generated()
    )
    before = await _note_when(stack, story, lambda n: n.status == COMPLETED and n.HasField("transcript"))

    records = [await stack.publisher.send(envelope) for envelope, _ in published]  # same event ids
    records += [(await stack.publisher.redrive(envelope))[1] for envelope, _ in published]  # new event ids
    await wait_consumed(stack.broker, stack.group, records)

    after = await _note_when(stack, story, lambda n: True)
    assert after.status == COMPLETED
    assert list(after.sections) == list(before.sections)
    assert list(after.transcript.segments) == list(before.transcript.segments)
    listed = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant))
    assert listed.total == 1


async def test_failure_is_kept_with_its_reason(stack: Stack, tenant: str):
    story = NoteStory(tenant)
    await _publish(stack, story, story.ingested(), story.started(), story.transcription_failed())
    note = await _note_when(stack, story, lambda n: n.status == FAILED)
    assert (note.failure.code, note.failure.message) == ("NO_SPEECH", "No speech was found in the audio")
    assert await _status(stack, tenant, story.note_id) == (FAILED, False)

    # A late (re-driven) start of the same run does not bring a failed note back to processing.
    late = await _publish(stack, story, story.started(), story.ingested())
    await wait_consumed(stack.broker, stack.group, [record for _, record in late])
    assert await _status(stack, tenant, story.note_id) == (FAILED, False)
    listed = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant, status=FAILED))
    assert [(n.note_id, n.failure.code) for n in listed.notes] == [(story.note_id, "NO_SPEECH")]


async def test_retry_resets_the_run_and_ignores_the_superseded_one(stack: Stack, tenant: str):
    story = NoteStory(tenant)
    first_run = await _publish(
        stack, story, story.ingested(), story.started(), story.transcribed(), story.generated()
    )
    await _note_when(stack, story, lambda n: n.status == COMPLETED and n.HasField("transcript") and n.info.name)

    await _publish(stack, story, story.started(attempt=2))
    note = await _note_when(stack, story, lambda n: n.run.attempt == 2)
    assert note.status == PROCESSING and note.run.run_id == story.run_ids[2]
    assert not note.HasField("transcript") and not note.sections  # the old run's results are gone
    assert note.info.name == "Rex"

    # The first run's events, re-driven late, no longer count.
    late = [await stack.publisher.redrive(envelope) for envelope, _ in first_run]
    await wait_consumed(stack.broker, stack.group, [record for _, record in late])
    note = await _note_when(stack, story, lambda n: True)
    assert (note.status, note.run.attempt) == (PROCESSING, 2) and not note.sections

    await _publish(stack, story, story.transcription_failed(attempt=2))
    note = await _note_when(stack, story, lambda n: n.status == FAILED)
    assert note.failure.code == "NO_SPEECH"


# -- lists and tenancy ---------------------------------------------------------------------------


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def test_list_filters_pagination_and_tenant_isolation(stack: Stack, tenant: str):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    tie = _at("2023-06-01T08:00:00")
    stories = {
        "rex": NoteStory(tenant, "Réx", "EXT-A", _at("2024-01-10T12:00:00")),
        "junior": NoteStory(tenant, "Rex Junior", "EXT-B", _at("2024-01-31T23:59:59")),
        "bolt": NoteStory(tenant, "Bolt", "EXT-C", _at("2024-02-01T00:00:00")),
        "mia": NoteStory(tenant, "Mia", "EXT-D", now - dt.timedelta(days=1)),
        "max": NoteStory(tenant, "Max", "EXT-E", now - dt.timedelta(days=3)),
        "tie1": NoteStory(tenant, "Luna", "EXT-F", tie),
        "tie2": NoteStory(tenant, "Nina", "EXT-G", tie),
    }
    other = NoteStory(f"other-{tenant}", "Rex", "EXT-A", now - dt.timedelta(days=1))
    for story in [*stories.values(), other]:
        await _publish(stack, story, story.ingested())
    await _publish(stack, stories["rex"], stories["rex"].generated())
    await _publish(stack, stories["mia"], stories["mia"].transcription_failed())
    await _note_when(stack, stories["rex"], lambda n: n.status == COMPLETED)
    await _note_when(stack, stories["mia"], lambda n: n.status == FAILED)
    for story in [*stories.values(), other]:
        await _note_when(stack, story, lambda n: n.info.name == story.name)

    ties = sorted([stories["tie1"].note_id, stories["tie2"].note_id], reverse=True)
    by_id = {story.note_id: key for key, story in stories.items()}

    async def listed(**filters) -> list[str]:
        answer = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant, limit=100, **filters))
        assert answer.total == len(answer.notes)
        return [by_id.get(n.note_id, n.note_id) for n in answer.notes]

    newest_first = ["mia", "max", "bolt", "junior", "rex", by_id[ties[0]], by_id[ties[1]]]
    assert await listed() == newest_first
    assert await listed(name="rex") == ["junior", "rex"]
    assert await listed(name="RÉX") == ["junior", "rex"]
    assert await listed(name="  juNior ") == ["junior"]
    assert await listed(name="%") == []
    assert await listed(status=COMPLETED) == ["rex"]
    assert await listed(status=FAILED) == ["mia"]
    assert await listed(status=PENDING) == ["max", "bolt", "junior", by_id[ties[0]], by_id[ties[1]]]
    assert await listed(from_date="2024-01-10", to_date="2024-01-31") == ["junior", "rex"]
    assert await listed(from_date="2024-02-01") == ["mia", "max", "bolt"]
    assert await listed(to_date="2024-01-10") == ["rex", by_id[ties[0]], by_id[ties[1]]]
    assert await listed(days=7) == ["mia", "max"]
    assert await listed(days=2) == ["mia"]
    assert await listed(external_id="EXT-B") == ["junior"]
    assert await listed(external_id="EXT") == []
    assert await listed(name="rex", from_date="2024-01-11") == ["junior"]

    pages = [
        await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant, page=page, limit=3)) for page in (1, 2, 3, 4)
    ]
    assert [[by_id[n.note_id] for n in p.notes] for p in pages] == [
        newest_first[0:3],
        newest_first[3:6],
        newest_first[6:],
        [],
    ]
    assert [(p.total, p.page, p.limit) for p in pages] == [(7, 1, 3), (7, 2, 3), (7, 3, 3), (7, 4, 3)]
    defaults = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant))
    assert (defaults.page, defaults.limit, defaults.total, len(defaults.notes)) == (1, 10, 7, 7)

    # Tenancy: the other tenant sees only its own note, and neither can read the other's.
    theirs = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=other.tenant_id, name="rex"))
    assert [n.note_id for n in theirs.notes] == [other.note_id] and theirs.total == 1
    denied = (grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant")
    assert await _rpc_error(stack.stub.GetNote(pb.GetNoteRequest(tenant_id=tenant, note_id=other.note_id))) == denied
    assert await _rpc_error(
        stack.stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=other.tenant_id, note_id=stories["rex"].note_id))
    ) == denied


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 101},
        {"limit": -1},
        {"page": -2},
        {"from_date": "2024-13-01"},
        {"from_date": "01/02/2024"},
        {"to_date": "20240102"},
        {"from_date": "2024-02-02", "to_date": "2024-02-01"},
        {"days": -1},
    ],
    ids=[
        "limit-over", "limit-negative", "page-negative", "bad-month", "bad-format", "basic-format", "reversed", "days"
    ],
)
async def test_list_rejects_invalid_filters(stack: Stack, tenant: str, filters: dict):
    status, code, _ = await _rpc_error(stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant, **filters)))
    assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR")


# -- read-your-writes ----------------------------------------------------------------------------


def _upload_requests(data: bytes, tenant_id: str):
    yield ingestion_pb2.UploadAudioRequest(
        metadata=ingestion_pb2.UploadMetadata(
            tenant_id=tenant_id,
            note=types.NoteInfo(name="Rex", gender="male", external_id="EXT-1"),
            filename="consulta.wav",
            content_type="audio/wav",
        )
    )
    for start in range(0, len(data), 16384):
        yield ingestion_pb2.UploadAudioRequest(chunk=data[start : start + 16384])


async def test_read_right_after_upload_answers_pending(stack: Stack, tenant: str, tmp_path: Path):
    data = write_tone(tmp_path / "tone.wav", seconds=1).read_bytes()
    upload = (await stack.ingestion.UploadAudio(_upload_requests(data, tenant))).upload

    # Its AudioIngested never reaches query (ingestion's broker does not exist): never a 404.
    started = asyncio.get_running_loop().time()
    note = (await stack.stub.GetNote(pb.GetNoteRequest(tenant_id=tenant, note_id=upload.note_id))).note
    assert asyncio.get_running_loop().time() - started < READ_YOUR_WRITES_WAIT_S + 2
    assert (note.note_id, note.status, note.info.name) == (upload.note_id, PENDING, "Rex")
    assert note.created_at == upload.created_at and note.run.run_id == upload.run.run_id
    assert await _status(stack, tenant, upload.note_id) == (PENDING, True)

    denied = (grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", "Note does not belong to current tenant")
    request = pb.GetNoteRequest(tenant_id=f"other-{tenant}", note_id=upload.note_id)
    assert await _rpc_error(stack.stub.GetNote(request)) == denied
    unknown = str(uuid.uuid4())
    not_found = (grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", "Note not found")
    assert await _rpc_error(stack.stub.GetNote(pb.GetNoteRequest(tenant_id=tenant, note_id=unknown))) == not_found
    assert await _rpc_error(
        stack.stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=tenant, note_id=unknown))
    ) == not_found

    # Once the events arrive, the read model answers from its own row.
    story = NoteStory(tenant, created_at=from_timestamp(upload.created_at), note_id=upload.note_id)
    story.run_ids[1] = upload.run.run_id
    await _publish(stack, story, story.ingested(), story.started())
    await _note_when(stack, story, lambda n: n.status == PROCESSING)


async def test_unknown_note_is_not_found_within_the_bound_when_ingestion_is_down(
    backend: str, broker: str, tmp_path: Path, topic_prefix: str, tenant: str
):
    wait_s = 2.0
    async with _database(backend, tmp_path) as database_url:
        settings = _query_settings(
            tmp_path,
            database_url,
            broker,
            topic_prefix,
            ingestion_addr=f"127.0.0.1:{free_port()}",
            read_your_writes_wait_s=wait_s,
        )
        query = await build_service(settings)
        publisher = EventPublisher(broker, topic_prefix)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{query.runtime.port}")
        try:
            await _connected(query)
            await publisher.start()
            stub = query_pb2_grpc.QueryServiceStub(channel)
            loop = asyncio.get_running_loop()
            started = loop.time()
            not_found = (grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND", "Note not found")
            unknown = str(uuid.uuid4())
            assert await _rpc_error(stub.GetNote(pb.GetNoteRequest(tenant_id=tenant, note_id=unknown))) == not_found
            assert await _rpc_error(
                stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=tenant, note_id=unknown))
            ) == not_found
            assert loop.time() - started < 2 * wait_s + 1

            # Projected notes are served without ingestion.
            story = NoteStory(tenant)
            await publisher.publish(story.ingested(), tenant_id=tenant, note_id=story.note_id)
            stack = Stack(query, stub, None, publisher, broker)  # type: ignore[arg-type]
            note = await _note_when(stack, story, lambda n: n.status == PENDING)
            assert note.info.name == "Rex"
        finally:
            await publisher.stop()
            await channel.close()
            await query.runtime.shutdown("test over")


# -- deletion ------------------------------------------------------------------------------------


async def _gone(stack: Stack, tenant_id: str, note_id: str) -> None:
    for call in (stack.stub.GetNote(pb.GetNoteRequest(tenant_id=tenant_id, note_id=note_id)),
                 stack.stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=tenant_id, note_id=note_id))):
        status, code, _ = await _rpc_error(call)
        assert (status, code) == (grpc.StatusCode.NOT_FOUND, "NOTE_NOT_FOUND")


async def test_a_deleted_note_is_gone_and_its_late_events_never_bring_it_back(stack: Stack, tenant: str):
    story, kept, early = NoteStory(tenant), NoteStory(tenant, name="Thor"), NoteStory(tenant, name="Bidu")
    deleted = ev.NoteDeleted(deleted_at=timestamp(dt.datetime.now(dt.UTC)))
    await _publish(stack, story, story.ingested(), story.started())
    await _publish(stack, kept, kept.ingested())
    await _note_when(stack, story, lambda n: n.status == PROCESSING)
    await _note_when(stack, kept, lambda n: n.status == PENDING)

    await _publish(stack, story, deleted)
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            await stack.stub.GetNoteStatus(pb.GetNoteStatusRequest(tenant_id=tenant, note_id=story.note_id))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            break
        assert asyncio.get_running_loop().time() < deadline, "the deletion was never projected"
        await asyncio.sleep(0.05)

    # The run that was going finishes after the deletion; a re-drive repeats the upload; the
    # deletion comes again. A note deleted before any of its events arrived never shows either.
    late = await _publish(stack, story, story.transcribed(), story.generated(), story.ingested(), deleted)
    late += await _publish(stack, early, deleted, early.ingested(), early.started(), early.generated())
    await wait_consumed(stack.broker, stack.group, [record for _, record in late])
    for note in (story, early):
        await _gone(stack, tenant, note.note_id)
        await _gone(stack, "tenant-other", note.note_id)
    listed = await stack.stub.ListNotes(pb.ListNotesRequest(tenant_id=tenant))
    assert [(n.note_id, n.status) for n in listed.notes] == [(kept.note_id, PENDING)]
    assert listed.total == 1
