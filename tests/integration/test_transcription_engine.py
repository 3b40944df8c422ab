"""The Whisper engine on synthesized speech, silence and noise, with the real default model.

espeak-ng speech is robotic, so the assertions look for a few robust words and
numbers, never exact text. Whisper base detects espeak-ng English and Spanish
but hears its Portuguese voices as Latin: Portuguese without a hint comes from
the engine's rule that takes the main configured language when the model hears
none of the allowed ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import subprocess
import sys
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

import numpy as np

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
# The corpus doctor's voice: espeak-ng's Brazilian female voice at 155 wpm, which Whisper base hears
# with little confidence (no-speech probability ~0.8, mean log-probability ~-0.95).
DOCTOR_PT = [
    "Bom dia. O que aconteceu com o seu cachorro?",
    "Ele está com febre e vomitou três vezes desde ontem?",
    "Vou examinar a barriga dele agora.",
    "Vou receitar um remédio para o vômito, duas vezes por dia, durante cinco dias.",
    "Volte na próxima semana para uma consulta de retorno.",
]
LONG_EN = [
    "Good morning, what brings you in today?",
    "My dog has been coughing for three days.",
    "Does he cough more at night or during the day?",
    "Mostly at night, and he is drinking a lot of water.",
    "Let me listen to his chest and check his temperature.",
    "His temperature is thirty nine degrees, which is a fever.",
    "I will prescribe an antibiotic twice a day for seven days.",
    "Please give it with food in the morning and in the evening.",
    "If the cough gets worse, call the clinic right away.",
    "Should I keep him away from the other dogs?",
    "Yes, keep him at home until the cough is gone.",
    "Come back next week so that we can check his lungs again.",
]


@dataclass(frozen=True)
class Clips:
    english: Path
    portuguese: Path
    three_sentences: Path
    silence: Path
    noise: Path
    doctor_pt: Path
    late_english: Path
    long_english: Path


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
    three_sentences = concat_wavs([english, cat, checkup], folder / "three.wav", gap_ms=1000)
    doctor = [
        synthesize(text, "pt", folder / f"doctor{i}.wav", voice="pt-br+f3", speed_wpm=155)
        for i, text in enumerate(DOCTOR_PT)
    ]
    long_parts = [synthesize(text, "en", folder / f"long{i}.wav") for i, text in enumerate(LONG_EN)]
    return Clips(
        english=english,
        portuguese=synthesize(PT_SENTENCE, "pt", folder / "pt.wav", voice=PT_VOICE, speed_wpm=130),
        three_sentences=three_sentences,
        silence=make_silence(folder / "silence.wav", 3),
        noise=make_white_noise(folder / "noise.wav", 3),
        doctor_pt=concat_wavs(doctor, folder / "doctor.wav", gap_ms=600),
        late_english=concat_wavs([make_silence(folder / "forty.wav", 40), three_sentences], folder / "late.wav"),
        # About 70 s: longer than two 30 s chunks.
        long_english=concat_wavs(long_parts, folder / "long.wav", gap_ms=2500),
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
    """Segments in order inside the audio; each one's words in order inside it."""
    previous_end = 0
    for segment in result.segments:
        assert 0 <= segment.start_ms <= segment.end_ms <= result.duration_ms
        assert segment.start_ms >= previous_end
        assert segment.text == segment.text.strip() != ""
        assert segment.words, segment
        word_end = segment.start_ms
        for word in segment.words:
            assert segment.start_ms <= word.start_ms <= word.end_ms <= segment.end_ms
            assert word.start_ms >= word_end
            assert word.text == word.text.strip() != ""
            assert 0.0 <= word.probability <= 1.0
            word_end = word.end_ms
        previous_end = segment.end_ms


def _words(result: TranscriptResult) -> list[str]:
    return ["".join(ch for ch in w.text.lower() if ch.isalnum()) for s in result.segments for w in s.words]


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
def test_short_windows_encode_less_and_hear_the_same(
    whisper_engine: WhisperEngine, clips: Clips, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip of a few seconds is encoded at about its length, not padded to Whisper's 30 s, and
    what the model hears is what it heard with 30 s windows."""
    from faster_whisper import WhisperModel

    encoded: list[int] = []
    original = WhisperModel.encode

    def spy(self, features):  # type: ignore[no-untyped-def]
        encoded.append(features.shape[-1])
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    short = whisper_engine.transcribe(clips.english, language="en")
    short_frames, encoded[:] = list(encoded), []
    full = whisper_engine.with_options(short_window_s=0).transcribe(clips.english, language="en")
    full_frames = list(encoded)

    seconds = short.duration_ms / 1000
    assert seconds < 20
    assert full_frames and set(full_frames) == {3000}
    assert short_frames and all(1000 <= frames <= max(1000, (seconds + 8.5) * 100) < 3000 for frames in short_frames)
    assert all(frames % 2 == 0 for frames in short_frames)
    for word in ("dog", "fever"):
        assert word in _text(short) and word in _text(full)
    assert difflib.SequenceMatcher(None, _words(short), _words(full)).ratio() >= 0.8, (_text(short), _text(full))
    _assert_well_timed(short)


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
@pytest.mark.parametrize("make", [make_silence, make_white_noise])
def test_a_minute_of_silence_or_noise_invents_nothing(whisper_engine: WhisperEngine, tmp_path: Path, make) -> None:
    seen: list[Segment] = []
    with pytest.raises(NoSpeechError):
        whisper_engine.transcribe(make(tmp_path / "minute.wav", 60), on_segment=lambda s, _p: seen.append(s))
    assert seen == []


@pytest.mark.model
def test_brazilian_female_voice_is_not_dropped_as_silence(whisper_engine: WhisperEngine, clips: Clips) -> None:
    """The corpus doctor's voice sits where Whisper's usual no-speech rule (no-speech > 0.6 and
    log-probability < -1.0) starts dropping whole windows: every sentence must come through."""
    result = whisper_engine.transcribe(clips.doctor_pt, language="pt")
    text = _text(result)
    assert "cachorro" in text, text
    assert "semana" in text, text
    assert "bom dia" in text, text
    _assert_well_timed(result)
    # Speech from the first sentence to the last one.
    assert result.segments[0].start_ms < 1000
    assert result.segments[-1].end_ms > 0.9 * result.duration_ms
    assert len(result.segments) >= 4


@pytest.mark.model
@pytest.mark.parametrize(("clip", "language"), [("three_sentences", "en"), ("doctor_pt", "pt")])
def test_language_detected_without_hint(whisper_engine: WhisperEngine, clips: Clips, clip: str, language: str) -> None:
    infos: list[tuple[str, float, int]] = []
    result = whisper_engine.transcribe(getattr(clips, clip), on_info=lambda *info: infos.append(info))
    assert result.language == language
    assert infos == [(language, result.language_probability, result.duration_ms)]
    if language == "en":
        assert result.language_probability > 0.9  # the model's own verdict


@pytest.mark.model
def test_language_detection_skips_leading_silence(whisper_engine: WhisperEngine, clips: Clips) -> None:
    """40 s of silence first: detection that looked only at the first 30 s would hear nothing."""
    result = whisper_engine.transcribe(clips.late_english)
    assert result.language == "en"
    assert result.language_probability > 0.9
    assert result.segments[0].start_ms >= 39_000
    assert "dog" in _text(result)
    _assert_well_timed(result)


@pytest.mark.model
def test_explicit_hint_wins_over_detection(whisper_engine: WhisperEngine, clips: Clips) -> None:
    result = whisper_engine.transcribe(clips.english, language="es")
    assert result.language == "es"
    assert result.language_probability == 1.0


@dataclass
class ChunkedRun:
    result: TranscriptResult
    chunks: list[tuple[int, int, list[Segment]]]  # offset_ms, samples, segments
    progress: list[float]
    segment_progress: list[float]
    postprocessed: list[tuple[int, str]]


@pytest.fixture(scope="module")
def chunked(whisper_engine: WhisperEngine, clips: Clips) -> ChunkedRun:
    chunks: list[tuple[int, int, list[Segment]]] = []
    progress: list[float] = []
    segment_progress: list[float] = []
    postprocessed: list[tuple[int, str]] = []

    def on_chunk(audio: np.ndarray, offset_ms: int, segments: list[Segment]) -> None:
        assert audio.dtype == np.float32 and audio.ndim == 1
        chunks.append((offset_ms, len(audio), segments))

    def postprocess(segments: list[Segment], language: str) -> list[Segment]:
        postprocessed.append((len(segments), language))
        return [dataclasses.replace(s, speaker="doctor") for s in segments]

    result = whisper_engine.with_options(chunk_s=30).transcribe(
        clips.long_english,
        language="en",
        on_segment=lambda _s, p: segment_progress.append(p),
        on_progress=progress.append,
        on_chunk=on_chunk,
        postprocess=postprocess,
    )
    return ChunkedRun(result, chunks, progress, segment_progress, postprocessed)


@pytest.mark.model
def test_chunked_transcription_matches_one_chunk(whisper_engine: WhisperEngine, clips: Clips, chunked) -> None:
    assert len(chunked.chunks) >= 3
    whole = whisper_engine.transcribe(clips.long_english, language="en")
    chunked_words, whole_words = _words(chunked.result), _words(whole)
    similarity = difflib.SequenceMatcher(a=whole_words, b=chunked_words).ratio()
    assert similarity > 0.9, (whole_words, chunked_words)
    assert abs(len(chunked_words) - len(whole_words)) <= 0.05 * len(whole_words)
    for needle in ("coughing", "temperature", "antibiotic", "week", "lungs"):
        assert needle in chunked_words
    _assert_well_timed(chunked.result)
    # No word doubled across a cut: a word never repeats the one before it at the same time.
    words = [w for s in chunked.result.segments for w in s.words]
    for before, after in zip(words, words[1:], strict=False):
        assert not (before.text == after.text and after.start_ms < before.end_ms + 300), (before, after)
    assert chunked.result.duration_ms == whole.duration_ms


@pytest.mark.model
def test_chunk_hooks_and_progress(chunked) -> None:
    result = chunked.result
    # on_chunk: every chunk, in order, covering the audio, each with the segments it decoded.
    offsets = [offset for offset, _, _ in chunked.chunks]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert round(sum(samples for _, samples, _ in chunked.chunks) * 1000 / 16000) == result.duration_ms
    ends = [*offsets[1:], result.duration_ms]
    for (offset, samples, segments), next_offset in zip(chunked.chunks, ends, strict=True):
        assert offset + round(samples * 1000 / 16000) == pytest.approx(next_offset, abs=1)
        assert all(offset <= s.start_ms and s.end_ms <= next_offset for s in segments)
    decoded = [s for _, _, segments in chunked.chunks for s in segments]
    # postprocess: once, with every segment and the language; its result is the transcript.
    assert chunked.postprocessed == [(len(decoded), "en")]
    assert [s.text for s in result.segments] == [s.text for s in decoded]
    assert {s.speaker for s in result.segments} == {"doctor"}
    # Progress: once per chunk, rising to 1.0; per segment never ahead of it and never falling.
    assert len(chunked.progress) == len(chunked.chunks)
    assert chunked.progress == sorted(chunked.progress) and chunked.progress[-1] == 1.0
    assert chunked.segment_progress == sorted(chunked.segment_progress)
    assert all(0 < p <= 1 for p in chunked.segment_progress)


@pytest.mark.model
def test_batched_pipeline(whisper_engine: WhisperEngine, clips: Clips) -> None:
    result = whisper_engine.with_options(batch_size=4).transcribe(clips.three_sentences, language="en")
    text = _text(result)
    assert "dog" in text and "cat" in text and "week" in text
    _assert_well_timed(result)
    with pytest.raises(NoSpeechError):
        whisper_engine.with_options(batch_size=4).transcribe(clips.noise, language="en")


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
    assert progress == sorted(progress)
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


# -- the engine's pure parts, no model -------------------------------------------------------


@dataclass
class _RawWord:
    word: str


def test_repetition_loop_is_cut_to_two_occurrences() -> None:
    from services.transcription.engine import _collapse_repeats

    words = [_RawWord(w) for w in " I don't know, I don't know, I don't know, I don't know, then fine".split(" ")]
    kept = "".join(" " + w.word for w in _collapse_repeats(words)).strip()
    assert kept == "I don't know, I don't know, then fine"
    ordinary = [_RawWord(w) for w in "no no, it is fine".split()]
    assert _collapse_repeats(list(ordinary)) == ordinary


def test_chunks_are_cut_in_the_longest_pause() -> None:
    from services.transcription.engine import _plan_cuts

    frames_per_s = 16000 / 512
    probs = np.full(int(100 * frames_per_s), 0.9, dtype=np.float32)
    pause = slice(int(24 * frames_per_s), int(25 * frames_per_s))  # a 1 s pause at 24 s
    probs[pause] = 0.05
    probs[int(20 * frames_per_s) : int(20.2 * frames_per_s)] = 0.05  # a shorter one at 20 s
    total = len(probs) * 512
    cuts = _plan_cuts(probs, total, 30 * 16000, quiet=0.35)
    assert 24 * 16000 < cuts[0] < 25 * 16000
    assert cuts[-1] == total and cuts == sorted(cuts)
    assert all(b - a <= 30 * 16000 for a, b in zip([0, *cuts], cuts, strict=False))


def test_batched_clips_never_split_a_region_under_30_s() -> None:
    from services.transcription.engine import _pack_clips

    clips = _pack_clips([10 * 16000, 15 * 16000, 10 * 16000, 40 * 16000])
    assert [(c["start"], c["end"]) for c in clips] == [(0, 25), (25, 35), (35, 65), (65, 75)]


def test_language_windows_are_spread_over_the_recording() -> None:
    from services.transcription.engine import _WindowSampler

    sampler = _WindowSampler(count=5)
    block = 60 * 16000
    for minute in range(60):  # an hour of speech, one minute at a time, each sample its minute
        audio = np.full(block, minute, dtype=np.float32)
        sampler.add(audio, np.ones(block // 512, dtype=bool), pad_frames=1)
    windows = sampler.windows()
    assert len(windows) == 5 and all(len(w) == 30 * 16000 for w in windows)
    minutes = [int(w[0]) for w in windows]
    assert minutes[0] == 0 and minutes[-1] >= 45 and minutes == sorted(minutes)
    assert len(sampler.kept) <= 10  # memory stays bounded


@dataclass
class _RawSegment:
    no_speech_prob: float
    avg_logprob: float


def test_known_hallucination_phrases_are_dropped_only_on_uncertain_audio(tmp_path: Path) -> None:
    from services.transcription.engine import Word, _is_hallucination

    cfg = EngineConfig(model_dir=tmp_path)
    sure = [Word(0, 500, "Obrigado.", 0.9)]
    unsure = [Word(0, 500, "Obrigado.", 0.3)]
    assert not _is_hallucination(" Obrigado.", _RawSegment(0.1, -0.3), sure, cfg)
    assert _is_hallucination(" Obrigado.", _RawSegment(0.1, -0.3), unsure, cfg)
    assert _is_hallucination("Thank you.", _RawSegment(0.9, -0.3), sure, cfg)
    assert _is_hallucination("Legendas pela comunidade Amara.org", _RawSegment(0.7, -0.2), sure, cfg)
    # A real sentence that merely contains the phrase is not one.
    assert not _is_hallucination("Obrigado, doutor, até semana que vem.", _RawSegment(0.9, -0.3), unsure, cfg)
