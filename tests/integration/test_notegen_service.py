"""Note generation over the real broker and gRPC, on SQLite and PostgreSQL: one note per run, edits kept."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select

from common.db import UTCDateTime, alembic_config, create_engine, migrate, utcnow
from common.events import timestamp
from common.grpc_errors import from_rpc_error
from scribe.events.v1 import events_pb2 as ev
from scribe.notegen.v1 import notegen_pb2 as pb
from scribe.notegen.v1 import notegen_pb2_grpc
from scribe.types.v1 import types_pb2 as types
from services.notegen.config import NotegenSettings
from services.notegen.models import MESSAGING, GenerationRow, SectionEditRow, SectionRow, section_uuid
from services.notegen.server import MIGRATIONS, build_service
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


# A second run of the same consultation: another drug, another weight, and no follow-up said.
LINES_RUN_2 = [
    "Good morning, what brings you in today?",
    "My dog Rex has been vomiting for three days and he will not eat.",
    "His temperature is thirty nine point five degrees and he weighs thirteen kilos.",
    "I will prescribe amoxicillin two hundred milligrams twice a day for seven days.",
]


async def generate_run(broker: str, prefix: str, note_id: str, lines: list[str], *, attempt: int = 1,
                       tenant_id: str = "t1") -> tuple[types.RunRef, ev.NoteGenerated]:
    """Publish a run's completed transcript; return the run and the NoteGenerated announced for it."""
    run = types.RunRef(run_id=str(uuid.uuid4()), attempt=attempt, requested_at=timestamp(utcnow()))
    await publish(broker, prefix, ev.TranscriptionCompleted(run=run, transcript=transcript(lines)),
                  tenant_id=tenant_id, note_id=note_id)
    for _ in range(3):
        found = await collect(broker, prefix, ev.NoteGenerated, at_least=attempt)
        for event in found:
            if event.payload.run.run_id == run.run_id:
                return run, event.payload
    raise AssertionError(f"no NoteGenerated for run {run.run_id}")


async def rejected(call) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = from_rpc_error(caught.value)
    return caught.value.code(), error.code, error.details


def by_label(sections) -> dict[str, types.NoteSection]:
    return {s.label: s for s in sections}


async def test_edited_section_is_a_new_version_and_announced(notegen, broker, topic_prefix):
    _, stub = notegen
    note_id = str(uuid.uuid4())
    run, note = await generate_run(broker, topic_prefix, note_id, LINES)
    generated = by_label(note.sections)
    assert all(s.version == 1 and not s.edited for s in note.sections)
    assert generated["prescriptions"].id == section_uuid(note_id, "prescriptions")

    original = generated["prescriptions"]
    edit = "Metronidazole 250 mg twice a day for five days."
    response = await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=original.id, content=edit))
    section = response.section
    assert response.note_id == note_id
    assert response.run == run
    assert (section.id, section.label, section.version, section.edited) == (original.id, "prescriptions", 2, True)
    assert section.content == edit
    assert (section.title, section.order) == (original.title, original.order)
    assert list(section.source_segments) == list(original.source_segments)

    updated = await collect(broker, topic_prefix, ev.NoteSectionUpdated, at_least=1)
    assert len(updated) == 1
    assert (updated[0].envelope.tenant_id, updated[0].envelope.note_id) == ("t1", note_id)
    assert updated[0].payload.section == section
    assert updated[0].payload.run == run

    # A title and order edit keeps the edited content: unset fields come from the current version.
    moved = await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=original.id.upper(),
                                                             title="Treatment", order=0))
    assert (moved.section.version, moved.section.title, moved.section.order) == (3, "Treatment", 0)
    assert moved.section.content == edit


async def test_update_section_rejections(notegen, broker, topic_prefix):
    _, stub = notegen
    note_id = str(uuid.uuid4())
    _, note = await generate_run(broker, topic_prefix, note_id, LINES)
    section_id = note.sections[0].id

    def update(**fields):
        return stub.UpdateSection(pb.UpdateSectionRequest(**fields))

    assert await rejected(update(tenant_id="t2", section_id=section_id, content="x")) == (
        grpc.StatusCode.PERMISSION_DENIED, "NOTE_ACCESS_DENIED", {})
    for unknown in (str(uuid.uuid4()), "not-a-uuid", ""):
        assert await rejected(update(tenant_id="t1", section_id=unknown, content="x")) == (
            grpc.StatusCode.NOT_FOUND, "SECTION_NOT_FOUND", {})
    invalid = [
        ({}, "section"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "t" * 256}, "title"),
        ({"content": "c" * 100_001}, "content"),
        ({"order": -1}, "order"),
        ({"order": 1001}, "order"),
    ]
    for fields, field in invalid:
        assert await rejected(update(tenant_id="t1", section_id=section_id, **fields)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", {"field": field}), fields
    # The limits themselves are accepted; an empty content is a clinician's choice.
    ok = await update(tenant_id="t1", section_id=section_id, title="t" * 255, content="", order=1000)
    assert (ok.section.version, ok.section.order, ok.section.content) == (2, 1000, "")


async def test_regeneration_keeps_clinician_edits(notegen, broker, topic_prefix):
    service, stub = notegen
    note_id = str(uuid.uuid4())
    run_1, first = await generate_run(broker, topic_prefix, note_id, LINES)
    sections_1 = by_label(first.sections)
    prescription = "Metronidazole 250 mg twice a day for five days."
    await stub.UpdateSection(pb.UpdateSectionRequest(
        tenant_id="t1", section_id=sections_1["prescriptions"].id, content=prescription))
    follow_up = await stub.UpdateSection(pb.UpdateSectionRequest(
        tenant_id="t1", section_id=sections_1["follow_up"].id, title="Recheck"))

    run_2, second = await generate_run(broker, topic_prefix, note_id, LINES_RUN_2, attempt=2)
    sections_2 = by_label(second.sections)
    assert {label: s.id for label, s in sections_2.items()} == {label: s.id for label, s in sections_1.items()}
    assert [s.order for s in second.sections] == sorted(s.order for s in second.sections)
    # Unedited sections show the new generation, as version 2.
    exam = sections_2["physical_exam"]
    assert "thirteen" in exam.content and (exam.version, exam.edited) == (2, False)
    assert (sections_2["chief_complaint"].version, sections_2["chief_complaint"].edited) == (2, False)
    # The edited section stays the clinician's, with the new run's source segments.
    kept = sections_2["prescriptions"]
    assert (kept.content, kept.version, kept.edited) == (prescription, 2, True)
    assert list(kept.source_segments) == [3]
    # An edited section the new run no longer writes is still part of the note.
    assert sections_2["follow_up"] == types.NoteSection(
        id=sections_1["follow_up"].id, label="follow_up", title="Recheck", content=sections_1["follow_up"].content,
        order=sections_1["follow_up"].order, version=2, edited=True)
    assert follow_up.section.source_segments  # while run 1 was the latest, it had run 1's

    prescriptions_id = sections_1["prescriptions"].id
    async with service.handlers.session_maker() as session:
        history = (await session.scalars(
            select(SectionRow).where(SectionRow.section_id == prescriptions_id).order_by(SectionRow.version)
        )).all()
    # Run 2's text of the edited section is kept as history, with a version above the edit's.
    assert [(row.run_id, row.version) for row in history] == [(run_1.run_id, 1), (run_2.run_id, 3)]
    assert "amoxicillin" in history[1].content

    # The next edit is above every version so far, and is announced against run 2.
    again = await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=prescriptions_id, order=7))
    assert (again.section.version, again.section.content, again.section.order) == (4, prescription, 7)
    assert again.run == run_2
    updated = await collect(broker, topic_prefix, ev.NoteSectionUpdated, at_least=3)
    assert [(e.payload.section.version, e.payload.run.attempt) for e in updated
            if e.payload.section.id == prescriptions_id] == [(2, 1), (4, 2)]

    # Re-driving run 2 announces the current sections again, edits applied.
    await publish(broker, topic_prefix, ev.TranscriptionCompleted(run=run_2, transcript=transcript(LINES_RUN_2)),
                  tenant_id="t1", note_id=note_id)
    generated = await collect(broker, topic_prefix, ev.NoteGenerated, at_least=3)
    assert len(generated) == 3
    redriven = by_label(generated[2].payload.sections)
    assert (redriven["prescriptions"].version, redriven["prescriptions"].order) == (4, 7)
    assert redriven["follow_up"].edited and not redriven["physical_exam"].edited


async def test_concurrent_edits_get_distinct_versions(notegen, broker, topic_prefix):
    service, stub = notegen
    note_id = str(uuid.uuid4())
    _, note = await generate_run(broker, topic_prefix, note_id, LINES)
    section_id = note.sections[0].id
    responses = await asyncio.gather(*(
        stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=section_id, content=f"edit {i}"))
        for i in range(6)
    ))
    assert sorted(r.section.version for r in responses) == [2, 3, 4, 5, 6, 7]
    async with service.handlers.session_maker() as session:
        versions = (await session.scalars(
            select(SectionEditRow.version).where(SectionEditRow.section_id == section_id)
        )).all()
    assert sorted(versions) == [2, 3, 4, 5, 6, 7]
    updated = await collect(broker, topic_prefix, ev.NoteSectionUpdated, at_least=6)
    assert sorted(e.payload.section.version for e in updated) == [2, 3, 4, 5, 6, 7]


async def test_migration_0002_backfills_section_ids(database_url):
    config = alembic_config(database_url, MIGRATIONS)
    await asyncio.to_thread(command.upgrade, config, "0001")
    generations = sa.table("generations", *(sa.column(c) for c in (
        "run_id", "note_id", "tenant_id", "attempt", "status", "language", "generator", "failure_code",
        "failure_message")), sa.column("requested_at", UTCDateTime), sa.column("created_at", UTCDateTime))
    sections = sa.table("sections", *(sa.column(c) for c in (
        "id", "run_id", "note_id", "label", "title", "content", "position")), sa.column("source_segments", sa.JSON))
    note_id, runs = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for attempt, run_id in enumerate(runs, start=1):
                await connection.execute(sa.insert(generations).values(
                    run_id=run_id, note_id=note_id, tenant_id="t1", attempt=attempt, status="completed",
                    language="en", generator="rules-v1", failure_code="", failure_message="",
                    requested_at=utcnow(), created_at=utcnow()))
            rows = [(runs[0], "chief_complaint"), (runs[0], "follow_up"), (runs[1], "chief_complaint")]
            for position, (run_id, label) in enumerate(rows):
                await connection.execute(sa.insert(sections).values(
                    id=str(uuid.uuid4()), run_id=run_id, note_id=note_id, label=label, title=label,
                    content="text", position=position, source_segments=[position]))
        await migrate(database_url, MIGRATIONS)
        async with engine.connect() as connection:
            found = (await connection.execute(
                select(SectionRow.run_id, SectionRow.label, SectionRow.section_id, SectionRow.version)
            )).all()
            assert await connection.scalar(select(func.count()).select_from(SectionEditRow)) == 0
        assert sorted(found) == sorted([
            (runs[0], "chief_complaint", section_uuid(note_id, "chief_complaint"), 1),
            (runs[0], "follow_up", section_uuid(note_id, "follow_up"), 1),
            (runs[1], "chief_complaint", section_uuid(note_id, "chief_complaint"), 2),
        ])
        # And back down and up again.
        await asyncio.to_thread(command.downgrade, config, "0001")
        await migrate(database_url, MIGRATIONS)
    finally:
        await engine.dispose()


async def test_regenerate_from_the_stored_transcript_is_a_new_revision(notegen, broker, topic_prefix):
    service, stub = notegen
    note_id = str(uuid.uuid4())
    run, note = await generate_run(broker, topic_prefix, note_id, LINES)
    assert note.revision == 0 and note.structured.fields["vitals"]
    plan = by_label(note.sections)["prescriptions"]
    await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=plan.id, content="Own words."))

    response = await stub.RegenerateNote(pb.RegenerateNoteRequest(tenant_id="t1", note_id=note_id,
                                                                  instructions="shorter", generator="rules"))
    assert (response.note_id, response.run, response.revision, response.generator) == (note_id, run, 1, "rules-v1")
    sections = by_label(response.sections)
    assert sections["prescriptions"].content == "Own words." and sections["prescriptions"].edited
    others = [s for s in response.sections if s.label != "prescriptions"]
    assert others and all(s.version >= 2 and not s.edited for s in others)
    assert all(s.sentences for s in others)  # generated sentences keep their provenance

    announced = await collect(broker, topic_prefix, ev.NoteGenerated, at_least=2)
    latest = max(announced, key=lambda event: event.payload.revision).payload
    assert latest.revision == 1 and list(latest.sections) == list(response.sections)

    # The regenerated text of the edited section is kept as history.
    async with service.handlers.session_maker() as session:
        history = (await session.scalars(select(SectionRow).where(SectionRow.section_id == plan.id))).all()
    assert sorted(row.revision for row in history) == [0, 1]

    for request, expected in [
        (pb.RegenerateNoteRequest(tenant_id="t2", note_id=note_id), (grpc.StatusCode.PERMISSION_DENIED,
                                                                      "NOTE_ACCESS_DENIED")),
        (pb.RegenerateNoteRequest(tenant_id="t1", note_id=str(uuid.uuid4())), (grpc.StatusCode.NOT_FOUND,
                                                                                "NOTE_NOT_FOUND")),
        (pb.RegenerateNoteRequest(tenant_id="t1", note_id=note_id, generator="llm"),
         (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR")),
    ]:
        status, code, _ = await rejected(stub.RegenerateNote(request))
        assert (status, code) == expected


async def test_a_deleted_note_s_generations_and_edits_go_and_its_late_transcripts_are_ignored(
    notegen, broker, topic_prefix
):
    service, stub = notegen
    note_id, kept_id = str(uuid.uuid4()), str(uuid.uuid4())
    _, note = await generate_run(broker, topic_prefix, note_id, LINES)
    section = by_label(note.sections)["plan"]
    await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=section.id, content="Rest."))
    consumer = service.messaging.consumers[0]

    async def rows(model, of: str) -> int:
        async with service.handlers.session_maker() as session:
            return await session.scalar(select(func.count()).select_from(model).where(model.note_id == of))

    await publish(broker, topic_prefix, ev.NoteDeleted(deleted_at=timestamp(utcnow())), tenant_id="t1",
                  note_id=note_id)
    for _ in range(400):
        if await rows(GenerationRow, note_id) == 0:
            break
        await asyncio.sleep(0.05)
    assert [await rows(model, note_id) for model in (GenerationRow, SectionRow, SectionEditRow)] == [0, 0, 0]
    async with service.handlers.session_maker() as session:  # nor its events' payloads in the outbox
        outbox = MESSAGING.outbox
        assert await session.scalar(select(func.count()).where(outbox.c.message_key == note_id)) == 0

    # A run's transcript still in flight when the note was deleted writes nothing and announces nothing.
    applied = consumer.applied_total
    late_run = types.RunRef(run_id=str(uuid.uuid4()), attempt=2, requested_at=timestamp(utcnow()))
    await publish(broker, topic_prefix, ev.TranscriptionCompleted(run=late_run, transcript=transcript(LINES)),
                  tenant_id="t1", note_id=note_id)
    await generate_run(broker, topic_prefix, kept_id, LINES, attempt=2)  # another note still works
    for _ in range(400):
        if consumer.applied_total >= applied + 2:
            break
        await asyncio.sleep(0.05)
    assert consumer.applied_total >= applied + 2
    assert await rows(GenerationRow, note_id) == 0
    announced = await collect(broker, topic_prefix, ev.NoteGenerated, at_least=3, timeout_s=3)
    assert sorted(e.envelope.note_id for e in announced) == sorted([note_id, kept_id])

    with pytest.raises(grpc.aio.AioRpcError) as edit:
        await stub.UpdateSection(pb.UpdateSectionRequest(tenant_id="t1", section_id=section.id, content="x"))
    assert from_rpc_error(edit.value).code == "SECTION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as regenerate:
        await stub.RegenerateNote(pb.RegenerateNoteRequest(tenant_id="t1", note_id=note_id))
    assert from_rpc_error(regenerate.value).code == "NOTE_NOT_FOUND"
