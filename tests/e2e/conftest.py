"""End-to-end fixtures: the speech model assembled once per session, consultation audio."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcription.model import ensure_default_model
from tests.support.speech import concat_wavs, synthesize

PT_TURNS = [
    ("doctor", "Bom dia. O que aconteceu com o Rex?"),
    ("patient", "Doutora, o meu cachorro está vomitando há três dias e não quer comer."),
    ("doctor", "Vamos examinar. A temperatura está em trinta e nove graus e o peso é de doze quilos."),
    ("doctor", "Vou receitar amoxicilina duas vezes ao dia durante sete dias. Retorno em uma semana."),
]
EN_TURNS = [
    ("doctor", "Good morning. What brings you in today?"),
    ("patient", "I have had a bad cough and a fever for five days."),
    ("doctor", "Your temperature is thirty eight degrees. Your lungs sound clear."),
    ("doctor", "I will prescribe ibuprofen twice a day for five days. Come back in one week if it is not better."),
]
# Two voices the diarizer can tell apart (espeak-ng's pt+m1 and pt+m3 are one voice to it, so the
# owner's complaint came out as the vet's), both heard by Whisper base at 120 wpm; renders are
# repeatable (tests/support/speech.py), so what passes here passes every time.
VOICES = {"pt": {"doctor": "pt+m3", "patient": "pt+f1"}, "en": {"doctor": "en-us+f3", "patient": "en-us+m3"}}
SPEED_WPM = {"pt": 120, "en": 150}


def render(turns, language: str, out: Path) -> Path:
    parts = []
    for index, (speaker, text) in enumerate(turns):
        parts.append(
            synthesize(text, language, out.parent / f"{out.stem}-{index}.wav", voice=VOICES[language][speaker],
                       speed_wpm=SPEED_WPM[language])
        )
    return concat_wavs(parts, out, gap_ms=500)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("model") / "whisper-base")


@pytest.fixture(scope="session")
def consultation_audio(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("speech")
    return {"pt": render(PT_TURNS, "pt", folder / "pt.wav"), "en": render(EN_TURNS, "en", folder / "en.wav")}
