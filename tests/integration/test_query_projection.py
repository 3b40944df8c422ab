"""The query projection's merge rules, exhaustively: every arrival order and duplicate gives one row.

The broker tests in ``test_query.py`` show a few orders end to end; these fold events into an
in-memory row directly (the same functions the consumer calls) so that every permutation of a
note's events can be tried in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from google.protobuf.message import Message

from common.events import new_envelope, timestamp
from scribe.events.v1 import events_pb2 as ev
from scribe.types.v1 import types_pb2 as types
from services.query.handlers import initial_row_values, merge_event, search_key
from services.query.models import NoteRow

NOTE_ID = str(uuid.uuid4())
TENANT = "tenant-a"
CREATED = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
RUNS = {1: str(uuid.uuid4()), 2: str(uuid.uuid4())}


def _run(attempt: int) -> types.RunRef:
    requested = CREATED + dt.timedelta(hours=attempt - 1)
    return types.RunRef(run_id=RUNS[attempt], attempt=attempt, requested_at=timestamp(requested))


def _ingested(attempt: int = 1) -> ev.AudioIngested:
    return ev.AudioIngested(
        run=_run(attempt),
        audio=types.AudioRef(duration_ms=61_000),
        note=types.NoteInfo(name="Réx", gender="male", external_id="EXT-1"),
        created_at=timestamp(CREATED),
    )


def _started(attempt: int = 1) -> ev.TranscriptionStarted:
    return ev.TranscriptionStarted(run=_run(attempt))


def _transcribed(attempt: int = 1) -> ev.TranscriptionCompleted:
    segment = types.TranscriptSegment(start_ms=0, end_ms=900, text=f"run {attempt}", speaker=types.SPEAKER_DOCTOR)
    return ev.TranscriptionCompleted(
        run=_run(attempt), transcript=types.Transcript(language="pt", duration_ms=61_000, segments=[segment])
    )


def _generated(attempt: int = 1) -> ev.NoteGenerated:
    section = types.NoteSection(id=f"s{attempt}", label="plan", title="Plano", content="Repouso.", order=1)
    return ev.NoteGenerated(run=_run(attempt), language="pt", sections=[section], generator="rules-v1")


def _failed(attempt: int = 1) -> ev.TranscriptionFailed:
    return ev.TranscriptionFailed(run=_run(attempt), failure=types.Failure(code="NO_SPEECH", message="No speech"))


def _project(events: list[tuple[Message, dt.datetime]]) -> dict:
    """Fold events in the given order into a row, as the consumer does; the row's columns."""
    row: NoteRow | None = None
    for payload, occurred_at in events:
        if row is None:
            envelope = new_envelope(payload, tenant_id=TENANT, note_id=NOTE_ID, producer="tests")
            row = NoteRow(**initial_row_values(envelope, payload, occurred_at))
        merge_event(row, payload, occurred_at)
    assert row is not None
    return {column.name: getattr(row, column.name) for column in NoteRow.__table__.columns}


def _timed(*payloads: Message) -> list[tuple[Message, dt.datetime]]:
    """Events as their producers would stamp them: one minute apart, in causal order."""
    return [(payload, CREATED + dt.timedelta(minutes=index)) for index, payload in enumerate(payloads)]


def test_every_order_of_a_successful_run_ends_completed_with_everything():
    events = _timed(_ingested(), _started(), _transcribed(), _generated())
    results = [_project(list(order)) for order in itertools.permutations(events)]
    first = results[0]
    assert all(result == first for result in results)
    assert first["status"] == "completed" and first["stage"] == 3 and first["progress"] == 1.0
    assert (first["name"], first["name_search"], first["created_at"]) == ("Réx", "rex", CREATED)
    assert first["updated_at"] == CREATED + dt.timedelta(minutes=3)
    assert [s["text"] for s in first["transcript"]] == ["run 1"] and [s["id"] for s in first["sections"]] == ["s1"]
    assert first["language"] == "pt" and first["duration_ms"] == 61_000 and first["failure_code"] == ""


def test_duplicates_in_any_order_change_nothing():
    events = _timed(_ingested(), _started(), _transcribed(), _generated())
    expected = _project(events)
    for order in itertools.permutations(events + events[:3]):
        assert _project(list(order)) == expected


def test_every_order_of_a_failed_run_ends_failed_with_its_reason():
    events = _timed(_ingested(), _started(), _failed())
    for order in itertools.permutations(events):
        result = _project(list(order))
        failure = (result["failure_code"], result["failure_message"])
        assert (result["status"], failure) == ("failed", ("NO_SPEECH", "No speech"))
        assert result["name"] == "Réx"


def test_a_retry_wins_over_its_superseded_run_whatever_the_order():
    # Run 1 completed, then a retry (run 2) failed; the run-1 events may come late or be re-driven.
    events = _timed(_ingested(1), _started(1), _transcribed(1), _generated(1), _started(2), _failed(2))
    results = [_project(list(order)) for order in itertools.permutations(events)]
    first = results[0]
    assert all(result == first for result in results)
    assert (first["status"], first["attempt"], first["run_id"]) == ("failed", 2, RUNS[2])
    assert first["transcript"] is None and first["sections"] is None and first["failure_code"] == "NO_SPEECH"
    assert (first["name"], first["created_at"]) == ("Réx", CREATED)


def test_first_terminal_event_of_a_run_wins():
    completed = _project(_timed(_ingested(), _generated(), _failed()))
    assert completed["status"] == "completed" and completed["failure_code"] == ""
    failed = _project(_timed(_ingested(), _failed(), _generated()))
    assert failed["status"] == "failed" and failed["sections"] is None


def test_search_key_ignores_case_and_accents():
    assert search_key("Réx") == search_key("REX") == "rex"
    assert search_key("São João") == "sao joao"
    assert search_key("Straße") == "strasse"


def _requested(attempt: int) -> ev.TranscriptionRequested:
    return ev.TranscriptionRequested(
        run=_run(attempt),
        audio=types.AudioRef(duration_ms=61_000),
        note=types.NoteInfo(name="Réx", gender="male", external_id="EXT-1"),
        created_at=timestamp(CREATED),
        reason="retry",
    )


def _section(version: int, content: str, edited: bool) -> types.NoteSection:
    return types.NoteSection(
        id="s-plan", label="plan", title="Plano", content=content, order=1, version=version, edited=edited
    )


def _generated_v(attempt: int, version: int, content: str, edited: bool = False) -> ev.NoteGenerated:
    return ev.NoteGenerated(
        run=_run(attempt), language="pt", sections=[_section(version, content, edited)], generator="rules-v1"
    )


def _edited(attempt: int, version: int, content: str) -> ev.NoteSectionUpdated:
    return ev.NoteSectionUpdated(run=_run(attempt), section=_section(version, content, True))


def test_a_retry_request_shows_processing_at_once_and_ends_with_the_new_run():
    events = _timed(_ingested(1), _started(1), _transcribed(1), _generated(1), _requested(2))
    processing = _project(events)
    assert (processing["status"], processing["attempt"], processing["run_id"]) == ("processing", 2, RUNS[2])
    assert processing["transcript"] is None and processing["sections"] is None
    events += [
        (_started(2), CREATED + dt.timedelta(minutes=10)),
        (_transcribed(2), CREATED + dt.timedelta(minutes=11)),
        (_generated(2), CREATED + dt.timedelta(minutes=12)),
    ]
    results = [_project(list(order)) for order in itertools.permutations(events[3:])]
    for result in results:
        assert (result["status"], result["attempt"]) == ("completed", 2)
        assert [s["text"] for s in result["transcript"]] == ["run 2"]


def test_a_section_edit_and_its_generation_in_either_order_show_the_edit():
    generated = _generated_v(1, 1, "Repouso.")
    edit = _edited(1, 2, "Repouso por 3 dias.")
    for order in itertools.permutations(_timed(_ingested(1), _started(1), _transcribed(1), generated, edit)):
        result = _project(list(order))
        assert result["status"] == "completed"
        [section] = result["sections"]
        assert (section["content"], section["version"], section["edited"]) == ("Repouso por 3 dias.", 2, True)


def test_an_older_section_version_never_replaces_a_newer_one():
    result = _project(_timed(_ingested(1), _generated_v(1, 1, "A"), _edited(1, 3, "C"), _edited(1, 2, "B")))
    assert [(s["content"], s["version"]) for s in result["sections"]] == [("C", 3)]
    # A re-announced generation (re-drive) of the same run keeps the edit too.
    result = _project(_timed(_ingested(1), _generated_v(1, 1, "A"), _edited(1, 2, "B"), _generated_v(1, 1, "A")))
    assert [(s["content"], s["version"]) for s in result["sections"]] == [("B", 2)]


def test_an_edit_of_a_superseded_run_is_ignored():
    result = _project(_timed(_ingested(1), _generated_v(1, 1, "A"), _requested(2), _edited(1, 2, "B")))
    assert result["status"] == "processing" and result["sections"] is None


def _progress(value: float, attempt: int = 1) -> ev.TranscriptionProgress:
    return ev.TranscriptionProgress(run=_run(attempt), progress=value, audio_done_ms=round(value * 61_000),
                                    duration_ms=61_000)


def test_progress_shows_while_processing_and_never_goes_back():
    row = _project(_timed(_ingested(), _started(), _progress(0.25), _progress(0.6)))
    assert row["status"] == "processing" and row["progress"] == pytest.approx(0.6, abs=1e-6)
    # A late, lower value (its own topic: any order) does not move it back, nor does it touch updated_at.
    late = _project(_timed(_ingested(), _started(), _progress(0.6)) + [(_progress(0.25), CREATED + dt.timedelta(hours=1))])
    assert late["progress"] == pytest.approx(0.6, abs=1e-6) and late["updated_at"] == CREATED + dt.timedelta(minutes=1)
    # Progress before TranscriptionStarted says it started.
    assert _project(_timed(_ingested(), _progress(0.3)))["status"] == "processing"


def test_progress_arriving_after_the_end_changes_nothing():
    finished = _timed(_ingested(), _started(), _transcribed(), _generated())
    for position in range(len(finished) + 1):
        events = list(finished)
        events.insert(position, (_progress(0.4), CREATED + dt.timedelta(seconds=90)))
        row = _project(events)
        assert row["status"] == "completed" and row["progress"] == 1.0
    # A superseded run's progress does not show on the retry's row.
    row = _project(_timed(_ingested(), _ingested(2), _started(2), _progress(0.9, attempt=1)))
    assert row["attempt"] == 2 and row["progress"] == 0.0
