"""The whole system, started as `make run` starts it, driven over HTTP with real speech."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from tests.support.pipeline import check_upload_becomes_note, upload
from tests.support.system import RunningSystem, start_system, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(tmp_path_factory, model_dir) -> RunningSystem:
    running = start_system(
        tmp_path_factory.mktemp("system"),
        model_dir,
        extra_env={"SCRIBE_INGESTION_REDRIVE_AFTER_S": "20", "SCRIBE_INGESTION_REDRIVE_CHECK_S": "2"},
    )
    yield running
    code = running.stop()
    assert code == 0, running.logs("launcher")
    for component, info in running.state()["children"].items():
        with pytest.raises(ProcessLookupError):
            os.kill(info["pid"], 0)


@pytest.mark.parametrize("language", ["pt", "en"])
def test_upload_becomes_note_with_transcript_and_sections(system, consultation_audio, language):
    check_upload_becomes_note(system, consultation_audio[language], language)


def test_stored_audio_is_encrypted_at_rest(system, consultation_audio):
    """The uploads above lie in the blob folder as ciphertext under the development key (0600)."""
    stored = [p for p in (system.data_dir / "blobs").rglob("*") if p.is_file() and ".staging" not in p.parts]
    assert len(stored) >= 2, stored
    uploaded = [audio.read_bytes() for audio in consultation_audio.values()]
    for path in stored:
        at_rest = path.read_bytes()
        assert at_rest[:4] == b"SCRB" and all(at_rest != audio and audio[:44] not in at_rest for audio in uploaded)
    key_file = system.data_dir / "run" / "blob_encryption_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in system.logs("ingestion") + system.logs("transcription")


def _wait_restarted(system: RunningSystem, component: str, old_pid: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = system.state()["children"][component]
        if info["pid"] != old_pid and info["restarts"] >= 1:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{component} was not restarted")


def _with_transcript(client, note_id: str, timeout_s: float = 30.0) -> dict:
    """The note once its transcript is in the read model. KNOWN GAP, not hidden: the transcript
    (TranscriptionCompleted) and the note (NoteGenerated) reach the query service on two topics, and
    NoteGenerated alone makes a note completed; after a broker restart the consumer re-reads both
    topics from the start and may apply the note first, so for up to a few seconds a completed note
    shows no transcript. A transcript that never arrives still fails here."""
    deadline = time.monotonic() + timeout_s
    while True:
        detail = client.get(f"/notes/v1/notes/{note_id}").json()["data"]
        if detail["transcript"] or time.monotonic() > deadline:
            return detail
        time.sleep(0.5)


@pytest.mark.parametrize("component", ["transcription", "broker", "notegen", "query", "ingestion"])
def test_sigkill_loses_no_note_and_duplicates_no_section(system, consultation_audio, component):
    with system.client() as client:
        note_ids = []
        for index in range(2):
            created = upload(client, consultation_audio["en"], "en", name=f"{component}-{index}")
            assert created.status_code == 201, created.text
            note_ids.append(created.json()["data"]["id"])
        time.sleep(1.0)  # events on their way, one transcription under way
        victim = system.pid(component)
        os.kill(victim, signal.SIGKILL)
        _wait_restarted(system, component, victim)

        for note_id in note_ids:
            assert wait_terminal(client, note_id, timeout_s=300) == "completed"
            detail = _with_transcript(client, note_id)
            labels = [s["label"] for s in detail["note_sections"]]
            assert labels and len(labels) == len(set(labels)), labels
            assert detail["transcript"], "the transcript never reached the read model"
        listed = client.get("/notes/v1/notes", params={"external_id": f"E2E-{component}-0", "limit": 100}).json()
        assert [n["id"] for n in listed["data"]] == [note_ids[0]]

    # Exactly one transcription job and one generation per note, whatever was redelivered.
    for database, table in (("transcription", "transcription_jobs"), ("notegen", "generations")):
        with sqlite3.connect(system.data_dir / f"{database}.db") as connection:
            for note_id in note_ids:
                (count,) = connection.execute(f"SELECT count(*) FROM {table} WHERE note_id = ?", (note_id,)).fetchone()
                assert count == 1, (database, note_id, count)
    with sqlite3.connect(system.data_dir / "notegen.db") as connection:
        for note_id in note_ids:
            rows = connection.execute("SELECT label FROM sections WHERE note_id = ?", (note_id,)).fetchall()
            assert len(rows) == len({r[0] for r in rows}), rows
