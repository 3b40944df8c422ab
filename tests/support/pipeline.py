"""What the end-to-end tests check of one upload, whichever profile the system runs in."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.system import RunningSystem, wait_terminal

# (language, phrases heard in the transcript, phrases expected in sections by label)
CASES = {
    # Whisper base mangles espeak-ng Portuguese beyond these words (see tests/e2e/conftest.py).
    "pt": (["bom dia", "cachorro", "rex", "comer"], {"chief_complaint": ["cachorro"]}),
    "en": (["fever", "temperature", "ibuprofen"], {"physical_exam": ["temperature"], "prescriptions": ["ibuprofen"]}),
}


def upload(client: httpx.Client, audio: Path, language: str, name: str = "Rex") -> httpx.Response:
    with open(audio, "rb") as handle:
        return client.post(
            "/notes/v1/notes",
            files={"audio": (audio.name, handle, "audio/wav")},
            data={"name": name, "gender": "male", "external_id": f"E2E-{name}", "language": language,
                  "metadata": '{"patient_name": "%s", "owner_name": "Joana"}' % name},
        )


def words(text: str) -> str:
    return " ".join(text.lower().replace(",", " ").replace(".", " ").split())


def check_upload_becomes_note(system: RunningSystem, audio: Path, language: str) -> dict:
    """Upload ``audio``; the note completes with the transcript and sections expected of ``language``.

    Returns the note's detail."""
    from services.notegen.domain.sections import title_for

    heard, in_sections = CASES[language]
    with system.client() as client:
        created = upload(client, audio, language)
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
        assert all(s["title"] == title_for(s["label"], language) for s in detail["note_sections"])
        for label, phrases in in_sections.items():
            assert label in sections, sorted(sections)
            for phrase in phrases:
                assert phrase in words(sections[label]["content"]), (label, sections[label]["content"])
        text = client.get(detail["transcription_url"])
        assert text.status_code == 200 and heard[0].split()[0] in text.text.lower()
    return detail
