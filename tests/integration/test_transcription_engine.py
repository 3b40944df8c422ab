"""The Whisper engine on synthesized speech, silence and noise, with the real default model.

espeak-ng speech is robotic, so the assertions look for a few robust words and
numbers, never exact text, and always pass the language (detection is
unreliable on synthetic voices).
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.transcription.engine import (
    EngineConfig,
    NoSpeechError,
    Segment,
    TranscriptionCancelled,
    TranscriptResult,
    UnsupportedLanguageError,
    WhisperEngine,
)
from services.transcription.model import ensure_default_model
from tests.support.speech import concat_wavs, make_silence, make_white_noise, synthesize

EN_SENTENCE = "The dog has a fever of thirty nine degrees and will take amoxicillin twice a day."
# espeak-ng's Brazilian voice sits at Whisper base's confidence threshold and triggers random
# temperature fallback; its European voice is transcribed reliably and tests the same language.
PT_SENTENCE = "O meu cachorro está doente e com febre."
PT_VOICE = "pt+m3"


@dataclass(frozen=True)
class Clips:
    english: Path
    portuguese: Path
    three_sentences: Path
    silence: Path
    noise: Path


@pytest.fixture(scope="module")
def whisper_engine(tmp_path_factory: pytest.TempPathFactory) -> WhisperEngine:
    engine = WhisperEngine(EngineConfig(model_dir=ensure_default_model(tmp_path_factory.mktemp("model"))))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    folder = tmp_path_factory.mktemp("clips")
    english = synthesize(EN_SENTENCE, "en", folder / "en.wav")
    cat = synthesize("The cat has been vomiting since yesterday and does not want to eat.", "en", folder / "cat.wav")
    checkup = synthesize("Please come back for a checkup next week.", "en", folder / "checkup.wav")
    return Clips(
        english=english,
        portuguese=synthesize(PT_SENTENCE, "pt", folder / "pt.wav", voice=PT_VOICE, speed_wpm=130),
        three_sentences=concat_wavs([english, cat, checkup], folder / "three.wav", gap_ms=1000),
        silence=make_silence(folder / "silence.wav", 3),
        noise=make_white_noise(folder / "noise.wav", 3),
    )


def _text(result: TranscriptResult) -> str:
    return " ".join(s.text for s in result.segments).lower()


def _has_word_like(text: str, target: str, cutoff: float = 0.7) -> bool:
    """Whether some word of ``text`` is spelled close to ``target`` (Whisper base misspells drug names)."""
    words = ["".join(ch for ch in w if ch.isalnum()) for w in text.split()]
    return bool(difflib.get_close_matches(target, words, n=1, cutoff=cutoff))


def _duration_ms(path: Path) -> int:
    with wave.open(str(path)) as w:
        return round(w.getnframes() * 1000 / w.getframerate())


def _assert_well_timed(result: TranscriptResult) -> None:
    previous_end = 0
    for segment in result.segments:
        assert 0 <= segment.start_ms <= segment.end_ms <= result.duration_ms
        assert segment.start_ms >= previous_end
        assert segment.text == segment.text.strip() != ""
        previous_end = segment.end_ms


@pytest.mark.model
def test_english_keywords_and_timing(whisper_engine: WhisperEngine, clips: Clips) -> None:
    result = whisper_engine.transcribe(clips.english, language="en")
    text = _text(result)
    assert result.language == "en"
    assert abs(result.duration_ms - _duration_ms(clips.english)) <= 20
    assert "dog" in text
    assert "fever" in text
    assert "39" in text or "thirty-nine" in text or "thirty nine" in text
    assert _has_word_like(text, "amoxicillin"), text
    _assert_well_timed(result)


@pytest.mark.model
def test_portuguese_with_region_tag(whisper_engine: WhisperEngine, clips: Clips) -> None:
    result = whisper_engine.transcribe(clips.portuguese, language="pt-BR")
    text = _text(result)
    assert result.language == "pt"
    assert "cachorro" in text
    assert "febre" in text
    _assert_well_timed(result)


@pytest.mark.model
@pytest.mark.parametrize("clip", ["silence", "noise"])
def test_no_speech(whisper_engine: WhisperEngine, clips: Clips, clip: str) -> None:
    with pytest.raises(NoSpeechError):
        whisper_engine.transcribe(getattr(clips, clip), language="en")


@pytest.mark.model
def test_callbacks_report_info_then_segments_with_increasing_progress(
    whisper_engine: WhisperEngine, clips: Clips
) -> None:
    infos: list[tuple[str, float, int]] = []
    calls: list[tuple[Segment, float]] = []

    def on_segment(segment: Segment, progress: float) -> None:
        assert len(infos) == 1, "on_info must come before the first segment"
        calls.append((segment, progress))

    result = whisper_engine.transcribe(
        clips.three_sentences,
        language="en",
        on_segment=on_segment,
        on_info=lambda *info: infos.append(info),
    )
    assert infos == [("en", 1.0, result.duration_ms)]
    assert len(result.segments) >= 2
    assert [segment for segment, _ in calls] == result.segments
    progress = [p for _, p in calls]
    assert all(0 < p <= 1 for p in progress)
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert progress[-1] > 0.8
    _assert_well_timed(result)
    text = _text(result)
    assert "dog" in text and "cat" in text and "week" in text


@pytest.mark.model
def test_should_stop_cancels_between_segments(whisper_engine: WhisperEngine, clips: Clips) -> None:
    stop = threading.Event()
    seen: list[Segment] = []

    def on_segment(segment: Segment, _progress: float) -> None:
        seen.append(segment)
        stop.set()

    with pytest.raises(TranscriptionCancelled):
        whisper_engine.transcribe(
            clips.three_sentences, language="en", on_segment=on_segment, should_stop=stop.is_set
        )
    assert len(seen) == 1


@pytest.mark.model
def test_should_stop_before_start(whisper_engine: WhisperEngine, clips: Clips) -> None:
    with pytest.raises(TranscriptionCancelled):
        whisper_engine.transcribe(clips.english, language="en", should_stop=lambda: True)


@pytest.mark.model
def test_concurrent_calls(whisper_engine: WhisperEngine, clips: Clips) -> None:
    results: dict[str, TranscriptResult] = {}
    errors: list[BaseException] = []

    def run(name: str, path: Path, language: str) -> None:
        try:
            results[name] = whisper_engine.transcribe(path, language=language)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("en", clips.english, "en")),
        threading.Thread(target=run, args=("pt", clips.portuguese, "pt")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert "fever" in _text(results["en"])
    assert "cachorro" in _text(results["pt"])


@pytest.mark.model
def test_unknown_language_is_rejected(whisper_engine: WhisperEngine, clips: Clips) -> None:
    with pytest.raises(UnsupportedLanguageError):
        whisper_engine.transcribe(clips.english, language="xx")


def test_transcribe_needs_load(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="load"):
        WhisperEngine(EngineConfig(model_dir=tmp_path)).transcribe(tmp_path / "a.wav")


def test_import_loads_nothing() -> None:
    code = (
        "import sys, services.transcription.engine, services.transcription.model; "
        "heavy = {'faster_whisper', 'ctranslate2', 'av', 'onnxruntime'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
