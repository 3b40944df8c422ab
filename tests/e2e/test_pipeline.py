"""The whole system, started as `make run` starts it, driven over HTTP with real speech."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

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


def upload(client, audio: Path, language: str, name: str = "Rex"):
    with open(audio, "rb") as handle:
        return client.post(
            "/notes/v1/notes",
            files={"audio": (audio.name, handle, "audio/wav")},
            data={"name": name, "gender": "male", "external_id": f"E2E-{name}", "language": language,
                  "metadata": '{"patient_name": "%s", "owner_name": "Joana"}' % name},
        )


def words(text: str) -> str:
    return " ".join(text.lower().replace(",", " ").replace(".", " ").split())


@pytest.mark.parametrize(
    "language, heard, in_sections",
    [
        # Whisper base mangles espeak-ng Portuguese beyond these words (see tests/e2e/conftest.py).
        ("pt", ["bom dia", "cachorro", "rex", "comer"], {"chief_complaint": ["cachorro"]}),
        ("en", ["fever", "temperature", "ibuprofen"], {"physical_exam": ["temperature"], "prescriptions": ["ibuprofen"]}),
    ],
)
def test_upload_becomes_note_with_transcript_and_sections(system, consultation_audio, language, heard, in_sections):
    with system.client() as client:
        created = upload(client, consultation_audio[language], language)
        assert created.status_code == 201, created.text
        note = created.json()["data"]
        assert note["transcription_status"] == "pending"
        assert note["metadata"] == [{"key": "patient_name", "value": "Rex"}, {"key": "owner_name", "value": "Joana"}]

        assert wait_terminal(client, note["id"]) == "completed"
        detail = client.get(f"/notes/v1/notes/{note['id']}").json()["data"]
        transcript = words(" ".join(item["text"] for item in detail["transcript"]))
        for phrase in heard:
            assert phrase in transcript, (phrase, transcript)
        starts = [item["start_time_ms"] for item in detail["transcript"]]
        assert starts == sorted(starts) and all(i["end_time_ms"] >= i["start_time_ms"] for i in detail["transcript"])
        assert detail["language"] == language
        sections = {s["label"]: s for s in detail["note_sections"]}
        from services.notegen.domain.sections import title_for

        assert all(s["title"] == title_for(s["label"], language) for s in detail["note_sections"])
        for label, phrases in in_sections.items():
            assert label in sections, sorted(sections)
            for phrase in phrases:
                assert phrase in words(sections[label]["content"]), (label, sections[label]["content"])
        text = client.get(detail["transcription_url"])
        assert text.status_code == 200 and heard[0].split()[0] in text.text.lower()


def _wait_restarted(system: RunningSystem, component: str, old_pid: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = system.state()["children"][component]
        if info["pid"] != old_pid and info["restarts"] >= 1:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{component} was not restarted")


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
            detail = client.get(f"/notes/v1/notes/{note_id}").json()["data"]
            labels = [s["label"] for s in detail["note_sections"]]
            assert labels and len(labels) == len(set(labels)), labels
            assert detail["transcript"]
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
