"""Speech-to-text engine: faster-whisper (CTranslate2) behind a small synchronous API.

Pure compute, no Kafka/gRPC/database: the transcription service runs
``WhisperEngine.transcribe`` in worker threads (one per ``num_workers``) and
turns its results and exceptions into events. Nothing is loaded at import
time; ``load()`` builds the model and warms it up.

A transcription reads the file twice, block by block, so that memory does not
grow with the length of the recording:

1. *Scan*: decode (PyAV, 16 kHz mono), run Silero VAD over every 32 ms frame and
   keep only the frame probabilities (~450 KB an hour), the exact duration and a
   few 30 s windows of speech spread over the recording (for language detection).
   Speech regions and chunk cuts (in pauses, never inside a word) are computed
   from the probabilities.
2. *Transcribe*: decode again, chunk by chunk (``chunk_s``, 5 min by default);
   the speech regions of each chunk are joined and decoded by Whisper, with word
   timestamps, then shifted back to the recording's timeline and filtered by the
   hallucination guards.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000
_VAD_FRAME = 512  # samples per Silero VAD frame (32 ms)
_WINDOW_S = 30  # Whisper's input window
_SCAN_BLOCK = _VAD_FRAME * 1875  # 60 s, a whole number of VAD frames

# Fields that only take effect when the model is loaded; ``with_options`` may not change them.
_LOAD_FIELDS = ("model_dir", "device", "compute_type", "cpu_threads", "num_workers")


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
    # 0: sequential ``WhisperModel.transcribe`` (temperature fallback, loop retry, no-speech skip
    # per window); >0: ``BatchedInferencePipeline`` decoding this many 30 s windows at once: one
    # temperature, no retry, no-speech check per segment only. On the 2-core dev machine batch 8
    # ran 11.9x real time against 10.1x, but with a word error rate of 21 % against 17.5 % (espeak
    # English) and 63 % against 56 % (espeak Portuguese): worth it on a GPU, not here.
    batch_size: int = 0
    # Temperature fallback: tried in order while a window fails the compression / log-prob checks.
    # One value turns it off: faster-whisper's default list ran 4.4x real time against 7.0x on
    # espeak Portuguese, with more errors (61 % against 56 %), and its sampling is not repeatable.
    temperatures: tuple[float, ...] = (0.0,)
    compression_ratio_threshold: float | None = 2.4
    # A window whose text fails the compression check (a repetition loop, which would swallow the
    # rest of the window) is decoded once more at temperature 0 with this repetition penalty
    # (and ``loop_no_repeat_ngram_size``): deterministic and paid only on loops. None: no retry.
    loop_repetition_penalty: float | None = 1.1
    loop_no_repeat_ngram_size: int = 4
    # A window is silence when its no-speech probability is above ``no_speech_threshold`` and its
    # mean log-probability below ``log_prob_threshold`` (which also triggers temperature fallback).
    # The VAD already keeps silence and noise from the model; Whisper's usual -1.0 dropped 3 of 93
    # windows of real (espeak-ng pt-br) speech in the corpus, whose lowest was -1.24.
    log_prob_threshold: float | None = -1.5
    no_speech_threshold: float | None = 0.6
    # Skip silences longer than this (s) around segments that look like hallucinations (sequential
    # only). Off: the VAD has already taken the silences out of what the model hears.
    hallucination_silence_threshold: float | None = None
    condition_on_previous_text: bool = False
    word_timestamps: bool = True
    # Drop known hallucination phrases ("Obrigado.", "Subtitles by ...") found on low-confidence audio.
    drop_hallucinations: bool = True
    # Silero VAD: False decodes the whole audio (Whisper's own no-speech checks remain).
    vad_filter: bool = True
    vad_threshold: float = 0.5
    vad_min_speech_ms: int = 0
    vad_min_silence_ms: int = 1000
    vad_speech_pad_ms: int = 400
    vad_max_speech_s: float = 30.0
    # Audio is read and transcribed in chunks of about this length, cut in pauses.
    chunk_s: float = 300.0
    # Whisper encodes 30 s windows; a last window of speech shorter than that (all of a short
    # recording) is padded only to its length plus ``short_window_margin_s``, and at least
    # ``short_window_s``, instead of to 30 s (sequential decoding only). On the 15 real-speech
    # clips of ../shared/external/speech (86 s) the engine took 11.9 s instead of 37.5 s, word
    # error rate 16.2 % against 15.0 % (two words); a 2 s margin invented "Hey Hey Hey Hey" at
    # the end of a window of espeak speech, 5 s and 8 s did not. 0: always 30 s.
    short_window_s: float = 10.0
    short_window_margin_s: float = 8.0
    # Detection picks among these languages (an explicit hint may name any other); empty: any.
    languages: tuple[str, ...] = ("pt", "en", "es")
    # 30 s windows of speech, spread over the recording, that language detection looks at.
    language_windows: int = 5


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


OnChunk = Callable[["np.ndarray", int, list[Segment]], None]
Postprocess = Callable[[list[Segment], str], list[Segment]]


class TranscriptionHooks(Protocol):
    """Per-transcription hooks (a diarizer, say): both optional.

    ``on_chunk(audio, offset_ms, segments)`` gets each chunk's audio (float32, 16 kHz mono, all of
    it, silences included), where it starts in the recording, and the chunk's segments.
    ``postprocess(segments, language)`` gets every segment at the end and returns the final ones.
    """

    on_chunk: OnChunk | None
    postprocess: Postprocess | None


class TranscriptionCancelled(Exception):
    """``should_stop()`` returned True; the transcription was abandoned between segments."""


class NoSpeechError(Exception):
    """The audio decoded fine but held no speech (silence, noise, or only empty segments)."""


class UnsupportedLanguageError(ValueError):
    """The language hint is not one the model knows."""


class InvalidAudioError(ValueError):
    """The file opened but has no audio stream."""


class _LoadedModel:
    """The model engines derived by ``with_options`` share, and the lock that loads it once."""

    def __init__(self) -> None:
        self.model: WhisperModel | None = None
        self.lock = threading.Lock()


class WhisperEngine:
    """A loaded Whisper model. ``transcribe`` may run in up to ``num_workers`` threads at once.

    ``hooks_factory``, when given, is called once per transcription (that passes no hooks of its
    own) for an object with ``on_chunk`` / ``postprocess`` attributes, e.g. a diarizer's adapter.
    """

    def __init__(self, config: EngineConfig, hooks_factory: Callable[[], TranscriptionHooks] | None = None) -> None:
        self.config = config
        self.hooks_factory = hooks_factory
        self._shared = _LoadedModel()

    @property
    def loaded(self) -> bool:
        """Whether ``load()`` has completed."""
        return self._shared.model is not None

    def with_options(self, **changes: Any) -> WhisperEngine:
        """An engine with other decoding options (any ``EngineConfig`` field but the load-time ones)
        that shares this one's model, loaded or not."""
        for name in _LOAD_FIELDS:
            if name in changes and changes[name] != getattr(self.config, name):
                raise ValueError(f"{name} takes effect only when a model is loaded: make a new engine")
        other = WhisperEngine(dataclasses.replace(self.config, **changes), self.hooks_factory)
        other._shared = self._shared
        return other

    def load(self) -> None:
        """Load the model from ``config.model_dir`` and warm it up; later calls do nothing."""
        with self._shared.lock:
            if self._shared.model is not None:
                return
            cfg = self.config
            model_dir = Path(cfg.model_dir)
            # A missing folder would make faster-whisper treat the path as a hub model name.
            if not (model_dir / "model.bin").is_file():
                raise FileNotFoundError(f"no Whisper model (model.bin) in {model_dir}")
            if os.environ.get("CT2_USE_MKL", "").strip().lower() in {"1", "true", "on"}:
                logger.warning("CT2_USE_MKL is set: int8 inference is several times slower on AMD CPUs")

            started = time.perf_counter()
            model = _model_class()(
                str(model_dir),
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=cfg.cpu_threads,
                num_workers=cfg.num_workers,
                local_files_only=True,
            )
            # Log-mel features of a whole chunk at once peak at ~1 MB per second of audio.
            model.feature_extractor = _bounded_feature_extractor(model.feat_kwargs)
            loaded = time.perf_counter()
            _warm_up(model, cfg)
            self._shared.model = model
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
        *,
        on_progress: Callable[[float], None] | None = None,
        on_chunk: OnChunk | None = None,
        postprocess: Postprocess | None = None,
    ) -> TranscriptResult:
        """Transcribe an audio file (any format PyAV decodes), blocking until done.

        ``language`` is an ISO 639-1 code ("pt", "en"; "pt-BR" is read as "pt");
        None detects it over up to ``language_windows`` windows of speech spread
        over the recording, among ``config.languages``.

        Callbacks, all optional: ``on_info(language, probability, duration_ms)``
        once, before the first segment; ``on_segment(segment, progress)`` as each
        segment is decoded; ``on_progress(progress)`` at the end of every chunk
        (progress: share of the audio's duration done, non-decreasing, 1.0 at the
        end); ``on_chunk(audio, offset_ms, segments)`` after each chunk;
        ``postprocess(segments, language)`` once at the end, its result is the
        transcript's segments. Without ``on_chunk``/``postprocess`` the engine's
        ``hooks_factory`` supplies them. ``should_stop()`` is polled before
        decoding starts, between blocks, chunks and segments; when it returns
        True, ``TranscriptionCancelled`` is raised.

        Raises ``NoSpeechError`` when no speech is left after the VAD and the
        hallucination guards, ``UnsupportedLanguageError`` for an unknown
        language, ``InvalidAudioError`` or ``av.error.FFmpegError`` for a file
        that does not decode.
        """
        model = self._shared.model
        if model is None:
            raise RuntimeError("WhisperEngine.load() must be called before transcribe()")
        cfg = self.config
        lang = _normalise_language(language, model) if language else None
        _check_stop(should_stop)
        if on_chunk is None and postprocess is None and self.hooks_factory is not None:
            hooks = self.hooks_factory()
            on_chunk = getattr(hooks, "on_chunk", None)
            postprocess = getattr(hooks, "postprocess", None)

        started = time.perf_counter()
        scan = _scan(audio_path, cfg, collect_windows=lang is None, should_stop=should_stop)
        duration_ms = round(scan.total_samples * 1000 / _SAMPLE_RATE)
        if not scan.regions:
            raise NoSpeechError(f"no speech found in {duration_ms / 1000:.1f}s of audio")
        if lang is None:
            lang, probability = _detect_language(model, scan.windows, cfg)
        else:
            probability = 1.0
        scan.windows.clear()
        scanned = time.perf_counter()
        if on_info is not None:
            on_info(lang, probability, duration_ms)

        progress = _Progress(scan.total_samples, on_progress)
        segments: list[Segment] = []
        reader = _SampleReader(_decode_blocks(audio_path, _SCAN_BLOCK))
        _loop_retry.options = (
            (cfg.loop_repetition_penalty, cfg.loop_no_repeat_ngram_size)
            if cfg.loop_repetition_penalty is not None
            else None
        )
        _short_window.frames = (
            (round(cfg.short_window_s * _FRAMES_PER_S), round(cfg.short_window_margin_s * _FRAMES_PER_S))
            if cfg.short_window_s > 0 and cfg.batch_size == 0
            else None
        )
        try:
            start = 0
            for end in scan.cuts:
                audio = reader.take(end - start)
                _check_stop(should_stop)
                chunk_segments = self._transcribe_chunk(
                    model, cfg, audio, start, _clip_regions(scan.regions, start, end), lang,
                    segments[-1].end_ms if segments else 0, duration_ms,
                    lambda segment: _emit(segment, on_segment, progress, should_stop),
                )  # fmt: skip
                segments.extend(chunk_segments)
                if on_chunk is not None:
                    on_chunk(audio, round(start * 1000 / _SAMPLE_RATE), list(chunk_segments))
                del audio
                progress.report(end)
                start = end
        finally:
            reader.close()
            _loop_retry.options = None
            _short_window.frames = None

        elapsed = time.perf_counter() - started
        logger.info(
            "transcribed %.1fs of audio in %.1fs (scan %.1fs, %d chunks, %.1fs of speech): "
            "%d segments, language %s (p=%.2f)",
            duration_ms / 1000, elapsed, scanned - started, len(scan.cuts),
            sum(e - s for s, e in scan.regions) / _SAMPLE_RATE, len(segments), lang, probability,
        )  # fmt: skip
        if not segments:
            raise NoSpeechError(f"no speech found in {duration_ms / 1000:.1f}s of audio")
        if postprocess is not None:
            segments = list(postprocess(segments, lang))
        return TranscriptResult(
            language=lang, language_probability=float(probability), duration_ms=duration_ms, segments=segments
        )

    def _transcribe_chunk(
        self,
        model: WhisperModel,
        cfg: EngineConfig,
        audio: np.ndarray,
        offset: int,
        regions: list[tuple[int, int]],
        language: str,
        previous_end_ms: int,
        duration_ms: int,
        emit: Callable[[Segment], None],
    ) -> list[Segment]:
        """Decode one chunk's speech regions; returns its segments (already passed to ``emit``)."""
        import numpy as np
        from faster_whisper.transcribe import restore_speech_timestamps

        if not regions:
            return []
        speech = np.concatenate([audio[s:e] for s, e in regions])
        timeline = [{"start": s, "end": e} for s, e in regions]
        options: dict[str, Any] = {
            "language": language,
            "beam_size": cfg.beam_size,
            "temperature": list(cfg.temperatures),
            "compression_ratio_threshold": cfg.compression_ratio_threshold,
            "log_prob_threshold": cfg.log_prob_threshold,
            "no_speech_threshold": cfg.no_speech_threshold,
            "condition_on_previous_text": cfg.condition_on_previous_text,
            "word_timestamps": cfg.word_timestamps,
            "vad_filter": False,
        }
        if cfg.batch_size > 0:
            from faster_whisper import BatchedInferencePipeline

            # A pipeline per call: it keeps per-call state (last_speech_timestamp).
            pipeline = BatchedInferencePipeline(model)
            raw_segments, _ = pipeline.transcribe(
                speech, batch_size=cfg.batch_size, without_timestamps=False,
                clip_timestamps=_pack_clips([e - s for s, e in regions]), **options,
            )  # fmt: skip
        else:
            raw_segments, _ = model.transcribe(
                speech, hallucination_silence_threshold=cfg.hallucination_silence_threshold, **options
            )
        chunk_start_ms = round(offset * 1000 / _SAMPLE_RATE)
        chunk_end_ms = min(round((offset + len(audio)) * 1000 / _SAMPLE_RATE), duration_ms)
        out: list[Segment] = []
        floor = max(previous_end_ms, chunk_start_ms)
        restored = restore_speech_timestamps(raw_segments, timeline, _SAMPLE_RATE)
        try:
            # faster-whisper decodes lazily: each step of this loop runs the model.
            for raw in restored:
                segment = _to_segment(raw, chunk_start_ms, floor, chunk_end_ms, cfg)
                if segment is not None:
                    out.append(segment)
                    floor = segment.end_ms
                    emit(segment)
        finally:
            # Closing the generators releases their decoding state at once, also on cancel.
            for gen in (restored, raw_segments):
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        return out


def _model_class() -> type[WhisperModel]:
    """``WhisperModel`` with a deterministic retry of windows that fall into a repetition loop
    (and short last windows, see ``_install_short_windows``)."""
    from faster_whisper import WhisperModel

    _install_short_windows()

    class LoopRetryingWhisperModel(WhisperModel):
        def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):  # type: ignore[no-untyped-def]
            result = super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
            threshold = options.compression_ratio_threshold
            retry = getattr(_loop_retry, "options", None)
            if retry is None or threshold is None or result[3] <= threshold:
                return result
            penalty, ngram = retry
            retry_options = dataclasses.replace(
                options, temperatures=[0.0], repetition_penalty=penalty, no_repeat_ngram_size=ngram
            )
            second = super().generate_with_fallback(encoder_output, prompt, tokenizer, retry_options)
            logger.debug("repetition loop (compression ratio %.1f), retried: %.1f", result[3], second[3])
            return second if second[3] < result[3] else result

    return LoopRetryingWhisperModel


def _bounded_feature_extractor(kwargs: dict[str, Any]) -> Any:
    """faster-whisper's ``FeatureExtractor`` computing long inputs 30 s at a time.

    The stock one takes the STFT of the whole input at once (~300 MB of temporaries for a 5 min
    chunk); this one fills the same log-mel array frame range by frame range, then applies the
    global clamp and scaling, so the features are identical and the temporaries stay at ~30 MB.
    """
    import numpy as np
    from faster_whisper.feature_extractor import FeatureExtractor

    class BoundedFeatureExtractor(FeatureExtractor):
        piece_frames = 3000

        def __call__(self, waveform, padding=160, chunk_length=None):  # type: ignore[no-untyped-def]
            frames = (len(waveform) + padding) // self.hop_length  # what the stock one returns
            if frames <= self.piece_frames:
                return super().__call__(waveform, padding=padding, chunk_length=chunk_length)
            if chunk_length is not None:
                self.n_samples = chunk_length * self.sampling_rate
                self.nb_max_frames = self.n_samples // self.hop_length
            waveform = np.asarray(waveform, dtype=np.float32)
            if padding:
                waveform = np.pad(waveform, (0, padding))
            half = self.n_fft // 2
            padded = np.pad(waveform, (half, half), mode="reflect")  # the stock STFT's centring
            del waveform
            window = np.hanning(self.n_fft + 1)[:-1].astype("float32")
            frames = (len(padded) - self.n_fft) // self.hop_length  # its last frame is dropped
            out = np.empty((self.mel_filters.shape[0], frames), dtype=np.float32)
            for first in range(0, frames, self.piece_frames):
                last = min(first + self.piece_frames, frames)
                piece = padded[first * self.hop_length : (last - 1) * self.hop_length + self.n_fft]
                stft = self.stft(
                    piece, self.n_fft, self.hop_length, window=window, center=False, return_complex=True
                ).astype("complex64")
                out[:, first:last] = np.log10(np.clip(self.mel_filters @ (np.abs(stft) ** 2), 1e-10, None))
            np.maximum(out, out.max() - 8.0, out=out)
            out += 4.0
            out /= 4.0
            return out

    return BoundedFeatureExtractor(**kwargs)


# The retry options of the transcription running in this thread (the model is shared by threads).
_loop_retry = threading.local()
# (minimum frames, margin frames) of short windows for the transcription running in this thread.
_short_window = threading.local()
_FRAMES_PER_S = 100  # Whisper's mel frames per second
_WINDOW_FRAMES = 3000


def _install_short_windows() -> None:
    """Let a window of less than 30 s of speech be encoded at about its own length.

    faster-whisper's sequential decoder pads every window's features to 3000 frames
    (``pad_or_trim``) before the encoder, whose cost is fixed by that length; CTranslate2's
    Whisper encoder takes shorter inputs. The replacement pads to the content plus a margin (at
    least a minimum) when the calling thread asked for it (``_short_window.frames``), and behaves
    exactly like the original otherwise (the batched pipeline, language detection, other users).
    """
    import faster_whisper.transcribe as fw_transcribe

    original = fw_transcribe.pad_or_trim
    if getattr(original, "scribe_short_windows", False):
        return

    def pad_or_trim(array: Any, length: int = _WINDOW_FRAMES, *, axis: int = -1) -> Any:
        frames = getattr(_short_window, "frames", None)
        if frames is not None and length == _WINDOW_FRAMES and array.shape[axis] < length:
            minimum, margin = frames
            length = min(_WINDOW_FRAMES, max(minimum, array.shape[axis] + margin))
            length += length % 2  # the encoder's convolution halves the frames
        return original(array, length, axis=axis)

    pad_or_trim.scribe_short_windows = True  # type: ignore[attr-defined]
    fw_transcribe.pad_or_trim = pad_or_trim


# -- reading audio -------------------------------------------------------------------------


def _decode_blocks(path: str | Path, block: int) -> Iterator[np.ndarray]:
    """Decode any file PyAV opens into float32 16 kHz mono blocks of ``block`` samples (last shorter)."""
    import av
    import numpy as np

    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=_SAMPLE_RATE)
    pending: list[np.ndarray] = []
    pending_n = 0
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudioError("the file has no audio stream")
            frames = _valid_frames(container.decode(audio=0))
            for frame in _chain_flush(frames):
                if frame is not None:
                    frame.pts = None  # as faster-whisper's decode_audio: no timestamp checks
                for out in resampler.resample(frame):
                    # s16 -> float32 exactly as faster_whisper.audio.decode_audio does it.
                    array = out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
                    pending.append(array)
                    pending_n += len(array)
                    while pending_n >= block:
                        joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                        yield joined[:block]
                        rest = joined[block:]
                        pending, pending_n = ([rest], len(rest)) if len(rest) else ([], 0)
        if pending_n:
            yield np.concatenate(pending)
    finally:
        # PyAV's resampler holds native buffers that only a collection frees (faster-whisper #390).
        del resampler
        gc.collect()


def _chain_flush(frames: Iterator[Any]) -> Iterator[Any]:
    yield from frames
    yield None  # flushes the resampler


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    import av

    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


class _SampleReader:
    """Hands out exact sample counts from a stream of blocks."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def take(self, count: int) -> np.ndarray:
        import numpy as np

        while self._buffered < count:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer.append(block)
            self._buffered += len(block)
        if not self._buffer:
            return np.zeros(0, dtype=np.float32)
        joined = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        out, rest = joined[:count], joined[count:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        # A copy, so that the chunk does not keep a larger decoded block alive.
        return np.array(out, dtype=np.float32)

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()


# -- scan: VAD, duration, language windows, chunk plan ----------------------------------------


@dataclass
class _Scan:
    total_samples: int
    regions: list[tuple[int, int]]  # speech, in samples
    cuts: list[int]  # chunk ends, in samples; the last one is total_samples
    windows: list[np.ndarray]  # speech for language detection


def _scan(
    path: str | Path, cfg: EngineConfig, collect_windows: bool, should_stop: Callable[[], bool] | None
) -> _Scan:
    import numpy as np
    from faster_whisper.vad import get_vad_model

    vad = get_vad_model()
    probs: list[np.ndarray] = []
    total = 0
    carry = np.zeros(0, dtype=np.float32)
    pad_frames = max(1, round(cfg.vad_speech_pad_ms / 2 * _SAMPLE_RATE / 1000 / _VAD_FRAME))
    sampler = _WindowSampler(max(1, cfg.language_windows)) if collect_windows else None
    blocks = _decode_blocks(path, _SCAN_BLOCK)
    try:
        for block in blocks:
            _check_stop(should_stop)
            total += len(block)
            audio = np.concatenate([carry, block]) if len(carry) else block
            usable = len(audio) // _VAD_FRAME * _VAD_FRAME
            carry = audio[usable:]
            if usable:
                block_probs = np.asarray(vad(audio[:usable]), dtype=np.float32).reshape(-1)
                probs.append(block_probs)
                if sampler is not None:
                    sampler.add(audio[:usable], block_probs >= cfg.vad_threshold, pad_frames)
    finally:
        blocks.close()
    if len(carry):
        tail = np.pad(carry, (0, _VAD_FRAME - len(carry)))
        tail_probs = np.asarray(vad(tail), dtype=np.float32).reshape(-1)
        probs.append(tail_probs)
        if sampler is not None:
            sampler.add(tail, tail_probs >= cfg.vad_threshold, pad_frames)
    frame_probs = np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)
    if cfg.vad_filter:
        regions = _speech_regions(frame_probs, total, cfg)
    else:
        regions = [(0, total)] if total else []
    chunk = max(_WINDOW_S, cfg.chunk_s) * _SAMPLE_RATE
    return _Scan(
        total_samples=total,
        regions=regions,
        cuts=_plan_cuts(frame_probs, total, int(chunk), _neg_threshold(cfg)),
        windows=sampler.windows() if sampler is not None else [],
    )


class _WindowSampler:
    """Keeps up to ``2 * count`` evenly spaced 30 s windows of speech, however long the stream.

    Speech frames are appended to a running buffer; every full 30 s makes window k. Only windows
    whose k is a multiple of ``stride`` are kept; when too many are kept the stride doubles.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.stride = 1
        self.kept: list[tuple[int, np.ndarray]] = []
        self.index = 0
        self.parts: list[np.ndarray] = []
        self.filled = 0

    def add(self, audio: np.ndarray, speech: np.ndarray, pad_frames: int) -> None:
        import numpy as np

        if not speech.any():
            return
        # Dilate the speech frames by the pad, so words keep their edges.
        kernel = np.ones(2 * pad_frames + 1, dtype=bool)
        mask = np.convolve(speech.astype(np.int8), kernel.astype(np.int8), mode="same") > 0
        frames = audio.reshape(-1, _VAD_FRAME)[mask[: len(audio) // _VAD_FRAME]].reshape(-1)
        size = _WINDOW_S * _SAMPLE_RATE
        while len(frames):
            room = size - self.filled
            if self.index % self.stride == 0:
                self.parts.append(frames[:room])
            self.filled += min(room, len(frames))
            frames = frames[room:]
            if self.filled == size:
                self._close_window()

    def _close_window(self) -> None:
        import numpy as np

        if self.parts and self.index % self.stride == 0:
            self.kept.append((self.index, np.concatenate(self.parts)))
            if len(self.kept) > 2 * self.count:
                self.stride *= 2
                self.kept = [(k, w) for k, w in self.kept if k % self.stride == 0]
        self.parts, self.filled = [], 0
        self.index += 1

    def windows(self) -> list[np.ndarray]:
        import numpy as np

        kept = [w for _, w in self.kept]
        if self.parts and (not kept or self.filled >= _SAMPLE_RATE * 5):
            kept.append(np.concatenate(self.parts))  # the last, partial window (a short recording)
        self.parts = []
        if len(kept) <= self.count:
            return kept
        if self.count == 1:
            return [kept[len(kept) // 2]]
        picks = sorted({round(i * (len(kept) - 1) / (self.count - 1)) for i in range(self.count)})
        return [kept[i] for i in picks]


def _neg_threshold(cfg: EngineConfig) -> float:
    return max(cfg.vad_threshold - 0.15, 0.01)


def _speech_regions(probs: np.ndarray, total: int, cfg: EngineConfig) -> list[tuple[int, int]]:
    """Speech regions (samples) from per-frame probabilities: faster-whisper's
    ``get_speech_timestamps`` (from silero-vad) on probabilities computed block by block."""
    sr, window = _SAMPLE_RATE, _VAD_FRAME
    threshold, neg_threshold = cfg.vad_threshold, _neg_threshold(cfg)
    min_speech = sr * cfg.vad_min_speech_ms / 1000
    pad = sr * cfg.vad_speech_pad_ms / 1000
    max_speech = sr * cfg.vad_max_speech_s - window - 2 * pad
    min_silence = sr * cfg.vad_min_silence_ms / 1000
    min_silence_at_max = sr * 98 / 1000

    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    triggered = False
    temp_end = prev_end = next_start = 0
    for i, prob in enumerate(probs.tolist()):
        here = window * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = here
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = here
            continue
        if triggered and here - current["start"] > max_speech:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = here
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = here
            if here - temp_end > min_silence_at_max:
                prev_end = temp_end
            if here - temp_end < min_silence:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
    if current and total - current["start"] > min_speech:
        current["end"] = total
        speeches.append(current)

    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(total, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(total, speech["end"] + pad))
    return [(s["start"], s["end"]) for s in speeches if s["end"] > s["start"]]


def _plan_cuts(probs: np.ndarray, total: int, chunk: int, quiet: float) -> list[int]:
    """Chunk ends: each in the longest pause (run of frames below ``quiet``) of the second half of
    its chunk, so that no word is cut; the last end is ``total``."""
    import numpy as np

    cuts: list[int] = []
    start = 0
    while total - start > chunk:
        lo = (start + chunk // 2) // _VAD_FRAME
        hi = min((start + chunk) // _VAD_FRAME, len(probs))
        window = probs[lo:hi]
        silent = window < quiet
        if silent.any():
            # Longest run of silent frames (the latest of equals), cut at its middle.
            edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
            run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            lengths = run_ends - run_starts
            best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
            frame = lo + (run_starts[best] + run_ends[best]) // 2
        else:
            frame = lo + int(np.argmin(window)) if len(window) else hi
        cut = max(start + 1, min(total, int(frame) * _VAD_FRAME))
        cuts.append(cut)
        start = cut
    cuts.append(total)
    return cuts


def _clip_regions(regions: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The regions inside [start, end), relative to ``start``."""
    out = []
    for s, e in regions:
        s, e = max(s, start), min(e, end)
        if e - s >= _SAMPLE_RATE // 10:  # shorter than 100 ms: a sliver of a region cut at the boundary
            out.append((s - start, e - start))
    return out


def _pack_clips(lengths: Sequence[int]) -> list[dict[str, float]]:
    """Windows of at most 30 s over the joined regions (for the batched pipeline), cut between regions."""
    limit = _WINDOW_S * _SAMPLE_RATE
    clips: list[dict[str, float]] = []
    start = position = 0
    for length in lengths:
        if position + length - start > limit and position > start:
            clips.append({"start": start / _SAMPLE_RATE, "end": position / _SAMPLE_RATE})
            start = position
        position += length
        while position - start > limit:  # a region longer than 30 s: cut it hard
            clips.append({"start": start / _SAMPLE_RATE, "end": (start + limit) / _SAMPLE_RATE})
            start += limit
    if position > start:
        clips.append({"start": start / _SAMPLE_RATE, "end": position / _SAMPLE_RATE})
    return clips


# -- language ---------------------------------------------------------------------------------


def _detect_language(model: WhisperModel, windows: list[np.ndarray], cfg: EngineConfig) -> tuple[str, float]:
    """The language of the windows of speech, among the allowed ones, and its probability.

    The model's language probabilities are averaged over the windows (weighted by their length).
    The most probable allowed language wins, unless the model's own top guess is not an allowed
    language and the allowed ones together get less than half: the model then does not hear any
    of them (Whisper base hears espeak-ng's Portuguese voices as Latin, giving Portuguese < 1 %),
    and the first allowed language, the deployment's main one, is taken. The probability is the
    chosen language's share of the allowed languages' probability.
    """
    from faster_whisper.audio import pad_or_trim

    if not model.model.is_multilingual:
        return "en", 1.0
    allowed = [code for code in cfg.languages if code in model.supported_languages] or list(model.supported_languages)
    if not windows:
        return allowed[0], 0.0
    # One window at a time: the encoder's attention over a batch of windows takes ~70 MB a window.
    results = [
        model.model.detect_language(model.encode(pad_or_trim(model.feature_extractor(w)[..., :-1])))[0]
        for w in windows
    ]
    weights = [len(w) for w in windows]
    total_weight = float(sum(weights))
    probs: dict[str, float] = {}
    for weight, result in zip(weights, results, strict=True):
        for token, prob in result:
            code = token[2:-2]
            probs[code] = probs.get(code, 0.0) + weight * prob / total_weight
    scores = {code: probs.get(code, 0.0) for code in allowed}
    mass = sum(scores.values())
    top = max(probs, key=probs.__getitem__)
    if top in scores or mass >= 0.5:
        best = max(scores, key=scores.__getitem__)
    else:
        best = allowed[0]
    logger.info(
        "language %s over %d windows (%.0fs of speech); allowed languages' share %.2f, model's top: %s",
        best, len(windows), total_weight / _SAMPLE_RATE, mass,
        ", ".join(f"{code}={p:.2f}" for code, p in sorted(probs.items(), key=lambda item: -item[1])[:3]),
    )  # fmt: skip
    return best, (scores[best] / mass) if mass > 0 else 0.0


def _normalise_language(language: str, model: WhisperModel) -> str:
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    if code not in model.supported_languages:
        raise UnsupportedLanguageError(f"language {language!r} is not supported by the model")
    return code


# -- segments and guards ----------------------------------------------------------------------

# What Whisper says over silence or noise, learnt from subtitled video. Dropped only when the
# audio under it is uncertain: a patient's real "Obrigado." is heard with confidence.
_HALLUCINATIONS = {
    "pt": ("obrigado", "obrigada", "muito obrigado", "muito obrigada", "obrigado por assistir",
           "obrigada por assistir", "inscreva se no canal", "legendas pela comunidade amara org"),
    "en": ("thank you", "thanks", "thank you very much", "thanks for watching", "thank you for watching",
           "please subscribe", "you"),
    "es": ("gracias", "muchas gracias", "gracias por ver", "gracias por ver el video", "suscribete",
           "subtitulos realizados por la comunidad de amara org"),
}  # fmt: skip
_HALLUCINATION_PHRASES = frozenset(p for phrases in _HALLUCINATIONS.values() for p in phrases)
_HALLUCINATION_MARKERS = ("amara org", "subtitles by", "subtitulos por", "subtitulos realizados",
                          "legendas pela", "legendas por", "legendado por", "transcribed by")  # fmt: skip


def _normalise_text(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.lower())
    letters = "".join(ch if ch.isalnum() else " " for ch in folded if not unicodedata.combining(ch))
    return " ".join(letters.split())


def _is_hallucination(text: str, raw: Any, words: Sequence[Word], cfg: EngineConfig) -> bool:
    """A known hallucination phrase on audio the model was unsure about: it thought the window
    more likely silence than not, or heard the words themselves with little confidence."""
    norm = _normalise_text(text)
    if norm not in _HALLUCINATION_PHRASES and not any(marker in norm for marker in _HALLUCINATION_MARKERS):
        return False
    mean_prob = sum(w.probability for w in words) / len(words) if words else 0.0
    unsure_window = raw.no_speech_prob > (cfg.no_speech_threshold if cfg.no_speech_threshold is not None else 0.6)
    return unsure_window or mean_prob < 0.5 or (
        cfg.log_prob_threshold is not None and raw.avg_logprob < cfg.log_prob_threshold
    )


def _collapse_repeats(words: list[Any], max_repeats: int = 2) -> list[Any]:
    """Cut what is left of a decoding loop: an n-gram (n <= 8 words) repeated more than
    ``max_repeats`` times in a row keeps its first ``max_repeats`` occurrences."""
    keys = [_normalise_text(w.word) for w in words]
    n = 1
    while n <= 8:
        i, changed = 0, False
        while i + n * (max_repeats + 1) <= len(keys):
            gram = keys[i : i + n]
            j = i + n
            while j + n <= len(keys) and keys[j : j + n] == gram:
                j += n
            repeats = (j - i) // n
            if repeats > max_repeats and any(gram):
                cut_from = i + n * max_repeats
                del words[cut_from:j]
                del keys[cut_from:j]
                changed = True
            i += 1
        if not changed:
            n += 1
    return words


def _to_segment(raw: Any, offset_ms: int, floor_ms: int, ceiling_ms: int, cfg: EngineConfig) -> Segment | None:
    """A faster-whisper segment (seconds from the chunk's start) as a ``Segment`` in the recording's
    milliseconds, clamped to [floor_ms, ceiling_ms]; None when a guard drops it."""
    text = raw.text.strip()
    if not any(ch.isalnum() for ch in text):
        return None
    if (
        cfg.no_speech_threshold is not None
        and raw.no_speech_prob > cfg.no_speech_threshold
        and (cfg.log_prob_threshold is None or raw.avg_logprob < cfg.log_prob_threshold)
    ):
        return None  # the batched pipeline does not apply the no-speech check itself

    raw_words = list(raw.words or [])
    threshold = cfg.compression_ratio_threshold
    if raw_words and threshold is not None and _compression_ratio(text) > threshold:
        before = len(raw_words)
        raw_words = _collapse_repeats(raw_words)
        if len(raw_words) < before:
            text = "".join(w.word for w in raw_words).strip()
            logger.info("cut a repetition loop at %.1fs: %d words dropped", raw.start, before - len(raw_words))

    def ms(seconds: float) -> int:
        return min(max(offset_ms + round(seconds * 1000), floor_ms), ceiling_ms)

    words: list[Word] = []
    previous = floor_ms
    for w in raw_words:
        word_text = w.word.strip()
        if not word_text:
            continue
        start = max(ms(w.start), previous)
        end = max(ms(w.end), start)
        words.append(Word(start_ms=start, end_ms=end, text=word_text, probability=round(float(w.probability), 4)))
        previous = end
    if words:
        start_ms, end_ms = words[0].start_ms, words[-1].end_ms
    else:
        start_ms = ms(raw.start)
        end_ms = max(ms(raw.end), start_ms)
    if cfg.drop_hallucinations and _is_hallucination(text, raw, words, cfg):
        logger.info("dropped a likely hallucination at %.1fs", start_ms / 1000)
        return None
    return Segment(
        start_ms=start_ms,
        end_ms=end_ms,
        text=text,
        avg_logprob=float(raw.avg_logprob),
        no_speech_prob=float(raw.no_speech_prob),
        words=tuple(words),
    )


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class _Progress:
    """Share of the duration done, never decreasing."""

    def __init__(self, total_samples: int, on_progress: Callable[[float], None] | None) -> None:
        self.total_ms = total_samples * 1000 / _SAMPLE_RATE
        self.total_samples = total_samples
        self.value = 0.0
        self.on_progress = on_progress

    def at_ms(self, ms: int) -> float:
        if self.total_ms > 0:
            self.value = max(self.value, min(ms / self.total_ms, 1.0))
        return self.value

    def report(self, samples: int) -> None:
        self.value = max(self.value, min(samples / self.total_samples, 1.0) if self.total_samples else 1.0)
        if self.on_progress is not None:
            self.on_progress(self.value)


def _emit(
    segment: Segment,
    on_segment: Callable[[Segment, float], None] | None,
    progress: _Progress,
    should_stop: Callable[[], bool] | None,
) -> None:
    value = progress.at_ms(segment.end_ms)
    if on_segment is not None:
        on_segment(segment, value)
    _check_stop(should_stop)


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


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TranscriptionCancelled("transcription stopped on request")


__all__ = [
    "EngineConfig",
    "InvalidAudioError",
    "NoSpeechError",
    "Segment",
    "TranscriptResult",
    "TranscriptionCancelled",
    "TranscriptionHooks",
    "UnsupportedLanguageError",
    "WhisperEngine",
    "Word",
]
