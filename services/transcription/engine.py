"""Speech-to-text engine: faster-whisper (CTranslate2) behind a small synchronous API.

Pure compute, no Kafka/gRPC/database: the transcription service runs
``WhisperEngine.transcribe`` in worker threads (one per ``num_workers``) and
turns its results and exceptions into events. Nothing is loaded at import
time; ``load()`` builds the model and warms it up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run the model.

    ``cpu_threads=1`` with ``num_workers=2`` gives about twice the throughput of
    one worker with two threads when two calls run at once; faster-whisper's
    default ``cpu_threads=0`` is the slowest choice on CPU.
    """

    model_dir: Path
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 1
    num_workers: int = 2
    beam_size: int = 5
    vad_filter: bool = True


@dataclass(frozen=True)
class Word:
    """One word with its own timing (ms from the start of the audio) and the model's confidence."""

    start_ms: int
    end_ms: int
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """One transcribed stretch of speech; times in milliseconds from the start of the audio.

    ``speaker`` is the role diarization gave it: "doctor", "patient" or "unspecified".
    """

    start_ms: int
    end_ms: int
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()
    speaker: str = "unspecified"


@dataclass(frozen=True)
class TranscriptResult:
    """A finished transcription: the (given or detected) language and the non-empty segments."""

    language: str
    language_probability: float
    duration_ms: int
    segments: list[Segment]


class TranscriptionCancelled(Exception):
    """``should_stop()`` returned True; the transcription was abandoned between segments."""


class NoSpeechError(Exception):
    """The audio decoded fine but held no speech (silence, noise, or only empty segments)."""


class UnsupportedLanguageError(ValueError):
    """The language hint is not one the model knows."""


class WhisperEngine:
    """A loaded Whisper model. ``transcribe`` may run in up to ``num_workers`` threads at once."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._model: WhisperModel | None = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether ``load()`` has completed."""
        return self._model is not None

    def load(self) -> None:
        """Load the model from ``config.model_dir`` and warm it up; later calls do nothing."""
        with self._load_lock:
            if self._model is not None:
                return
            cfg = self.config
            model_dir = Path(cfg.model_dir)
            # A missing folder would make faster-whisper treat the path as a hub model name.
            if not (model_dir / "model.bin").is_file():
                raise FileNotFoundError(f"no Whisper model (model.bin) in {model_dir}")
            if os.environ.get("CT2_USE_MKL", "").strip().lower() in {"1", "true", "on"}:
                logger.warning("CT2_USE_MKL is set: int8 inference is several times slower on AMD CPUs")

            from faster_whisper import WhisperModel

            started = time.perf_counter()
            model = WhisperModel(
                str(model_dir),
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=cfg.cpu_threads,
                num_workers=cfg.num_workers,
                local_files_only=True,
            )
            loaded = time.perf_counter()
            _warm_up(model, cfg)
            self._model = model
            logger.info(
                "whisper model loaded from %s in %.2fs, warmed up in %.2fs "
                "(device=%s compute_type=%s cpu_threads=%d num_workers=%d)",
                model_dir, loaded - started, time.perf_counter() - loaded,
                cfg.device, cfg.compute_type, cfg.cpu_threads, cfg.num_workers,
            )  # fmt: skip

    def transcribe(
        self,
        audio_path: str | Path,
        language: str | None = None,
        on_segment: Callable[[Segment, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_info: Callable[[str, float, int], None] | None = None,
    ) -> TranscriptResult:
        """Transcribe an audio file (any format PyAV decodes), blocking until done.

        ``language`` is an ISO 639-1 code ("pt", "en"; "pt-BR" is read as "pt");
        None lets the model detect it. ``on_segment(segment, progress)`` is called
        as each segment is decoded, with progress in [0, 1]. ``should_stop()`` is
        polled before decoding starts and between segments; when it returns True,
        ``TranscriptionCancelled`` is raised. ``on_info(language, probability,
        duration_ms)`` is called once, before the first segment is decoded.
        Raises ``NoSpeechError`` when no segment has text,
        ``UnsupportedLanguageError`` for an unknown language.
        """
        model = self._model
        if model is None:
            raise RuntimeError("WhisperEngine.load() must be called before transcribe()")
        cfg = self.config
        lang = _normalise_language(language, model) if language else None
        _check_stop(should_stop)

        started = time.perf_counter()
        raw_segments, info = model.transcribe(
            str(audio_path),
            language=lang,
            beam_size=cfg.beam_size,
            vad_filter=cfg.vad_filter,
            # Conditioning on earlier text lets one bad segment derail the rest (repetition loops).
            condition_on_previous_text=False,
        )
        duration_ms = round(info.duration * 1000)
        segments: list[Segment] = []
        # faster-whisper decodes lazily: each step of this loop runs the model.
        try:
            if on_info is not None:
                on_info(info.language, float(info.language_probability), duration_ms)
            for raw in raw_segments:
                text = raw.text.strip()
                if text:
                    # Whisper timestamps come from a padded 30 s window and can overshoot the audio.
                    end_ms = min(round(raw.end * 1000), duration_ms)
                    segment = Segment(
                        start_ms=min(round(raw.start * 1000), end_ms),
                        end_ms=end_ms,
                        text=text,
                        avg_logprob=raw.avg_logprob,
                        no_speech_prob=raw.no_speech_prob,
                    )
                    segments.append(segment)
                    if on_segment is not None:
                        on_segment(segment, min(end_ms / duration_ms, 1.0) if duration_ms else 1.0)
                _check_stop(should_stop)
        finally:
            # Closing the generator releases its decoding state at once, also on cancel.
            close = getattr(raw_segments, "close", None)
            if close is not None:
                close()

        elapsed = time.perf_counter() - started
        logger.info(
            "transcribed %.1fs of audio in %.1fs: %d segments, language %s (p=%.2f)",
            duration_ms / 1000, elapsed, len(segments), info.language, info.language_probability,
        )  # fmt: skip
        if not segments:
            raise NoSpeechError(f"no speech found in {duration_ms / 1000:.1f}s of audio")
        return TranscriptResult(
            language=info.language,
            language_probability=float(info.language_probability),
            duration_ms=duration_ms,
            segments=segments,
        )


def _warm_up(model: WhisperModel, cfg: EngineConfig) -> None:
    """Run the VAD once and every worker's encoder and decoder once, so no real job pays for first use."""
    import numpy as np

    # The content hardly matters: the encoder always sees a padded 30 s window.
    audio = np.random.default_rng(0).normal(0.0, 1e-3, _SAMPLE_RATE).astype(np.float32)

    def run(**options: object) -> None:
        segments, _ = model.transcribe(audio, language="en", condition_on_previous_text=False, **options)
        for _ in segments:
            pass

    if cfg.vad_filter:
        run(vad_filter=True)
    # One call per worker, at once, so that each CTranslate2 replica gets its first call.
    workers = max(1, cfg.num_workers)
    options = {"vad_filter": False, "beam_size": cfg.beam_size, "temperature": 0.0,
               "without_timestamps": True, "max_new_tokens": 4}  # fmt: skip
    with ThreadPoolExecutor(workers, thread_name_prefix="whisper-warmup") as pool:
        for future in [pool.submit(run, **options) for _ in range(workers)]:
            future.result()


def _normalise_language(language: str, model: WhisperModel) -> str:
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    if code not in model.supported_languages:
        raise UnsupportedLanguageError(f"language {language!r} is not supported by the model")
    return code


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TranscriptionCancelled("transcription stopped on request")
