"""Diarization on real (synthesized) speech: two espeak-ng voices, the real voice encoder.

The consultation is made here, phrase by phrase, so every phrase's time is known exactly; the
segments handed to the Diarizer are what a perfect transcript would give (no Whisper), one of them
holding the end of the owner's turn and the start of the vet's, with phrase-level "words" and no
punctuation, so it can only be split by the voices.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from services.transcription.diarization import DOCTOR, PATIENT, Diarizer, load_encoder
from services.transcription.engine import Segment, Word
from tests.support.speech import synthesize

SR = 16_000
VOICES = {DOCTOR: ("en-us+f3", 155), PATIENT: ("en-us+m3", 162)}
TURNS = [
    (DOCTOR, ["Good morning.", "What brings you and Max in today?"]),
    (PATIENT, ["Hi doctor.", "He has been limping on his back leg since yesterday,",
               "and he cried when I touched it."]),
    (DOCTOR, ["Let me examine the leg.", "His temperature is thirty eight point five degrees,",
              "and he weighs twenty kilos."]),
    (PATIENT, ["Is it serious?", "He jumped off the sofa on Sunday,", "and he has not eaten much since then."]),
    (DOCTOR, ["It looks like a sprain.", "I'll prescribe meloxicam, one tablet by mouth once a day for five days.",
              "Come back in one week if he is still limping."]),
    (PATIENT, ["Okay, once a day for five days.", "Thank you, doctor."]),
]  # fmt: skip
PHRASE_GAP_MS = 150
TURN_GAP_MS = 500


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SR and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def consultation(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[tuple[str, int, int, str]]]:
    """(audio, [(role, start_ms, end_ms, phrase)]) for the whole consultation."""
    folder = tmp_path_factory.mktemp("speech")
    pieces: list[np.ndarray] = []
    phrases: list[tuple[str, int, int, str]] = []
    at = 0
    for t, (role, texts) in enumerate(TURNS):
        voice, wpm = VOICES[role]
        for p, text in enumerate(texts):
            gap = (TURN_GAP_MS if p == 0 else PHRASE_GAP_MS) if (t or p) else 250
            pieces.append(np.zeros(gap * SR // 1000, dtype=np.float32))
            at += gap * SR // 1000
            audio = _read(synthesize(text, "en", folder / f"{t}-{p}.wav", voice=voice, speed_wpm=wpm))
            # espeak-ng leaves silence at both ends: the phrase is where the signal is
            loud = np.flatnonzero(np.abs(audio) > 0.01)
            audio = audio[loud[0] : loud[-1] + 1]
            pieces.append(audio)
            phrases.append((role, at * 1000 // SR, (at + len(audio)) * 1000 // SR, text))
            at += len(audio)
    pieces.append(np.zeros(SR // 4, dtype=np.float32))
    return np.concatenate(pieces), phrases


def _segment(phrases: list[tuple[str, int, int, str]], punctuated: bool = True) -> Segment:
    words = tuple(
        Word(start, end, text if punctuated else text.rstrip(".,?!"), 0.9) for _, start, end, text in phrases
    )
    return Segment(phrases[0][1], phrases[-1][2], " ".join(w.text for w in words), -0.2, 0.01, words)


def test_two_espeak_voices_become_doctor_and_patient(
    consultation: tuple[np.ndarray, list[tuple[str, int, int, str]]], tmp_path: Path
) -> None:
    audio, phrases = consultation
    turn_of: list[int] = []
    for t, (_, texts) in enumerate(TURNS):
        turn_of += [t] * len(texts)
    by_turn = [[p for p, t in zip(phrases, turn_of, strict=True) if t == k] for k in range(len(TURNS))]
    # turns 0-2 as one segment each; the end of turn 3 and the start of turn 4 in one segment
    mixed = by_turn[3][1:] + by_turn[4][:2]
    segments = [_segment(by_turn[k]) for k in range(3)]
    segments += [_segment(by_turn[3][:1]), _segment(mixed, punctuated=False), _segment(by_turn[4][2:])]
    segments += [_segment(by_turn[5])]

    diarizer = Diarizer(tmp_path, encoder=load_encoder(tmp_path))
    chunk = 20 * SR
    for offset in range(0, len(audio), chunk):
        start_ms, end_ms = offset * 1000 // SR, (offset + chunk) * 1000 // SR
        mine = [s for s in segments if start_ms <= s.start_ms < end_ms]
        stop = max([offset + chunk] + [s.end_ms * SR // 1000 + 1 for s in mine])
        diarizer.add(audio[offset:stop], start_ms, mine)
    result = diarizer.finish("en")

    assert diarizer.stats.speakers == 2
    # the mixed segment came back as two: the owner's end of turn 3, the vet's start of turn 4
    assert len(result) == len(segments) + 1
    expected_texts = [s.text for s in segments[:4]]
    expected_texts += [" ".join(p[3].rstrip(".,?!") for p in by_turn[3][1:]),
                       " ".join(p[3].rstrip(".,?!") for p in by_turn[4][:2])]  # fmt: skip
    expected_texts += [s.text for s in segments[5:]]
    assert [s.text for s in result] == expected_texts
    assert [s.speaker for s in result] == [DOCTOR, PATIENT, DOCTOR, PATIENT, PATIENT, DOCTOR, DOCTOR, PATIENT]
    assert result[4].end_ms == by_turn[3][-1][2] and result[5].start_ms == by_turn[4][0][1]
