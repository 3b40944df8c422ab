"""Transcription settings (``SCRIBE_TRANSCRIPTION_*``, plus the deployment-wide ``SCRIBE_*``).

Lists are comma separated (``SCRIBE_TRANSCRIPTION_LANGUAGES=pt,en,es``); ``none`` turns an
optional threshold off (``SCRIBE_TRANSCRIPTION_NO_SPEECH_THRESHOLD=none``). A GPU needs no code
change: ``SCRIBE_TRANSCRIPTION_DEVICE=cuda SCRIBE_TRANSCRIPTION_COMPUTE_TYPE=float16``, and a larger
model only ``SCRIBE_TRANSCRIPTION_MODEL_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings
from services.transcription.engine import EngineConfig

# EngineConfig fields that only take effect when the model is loaded.
_LOAD_TIME = ("device", "compute_type", "cpu_threads", "num_workers")
# EngineConfig fields read at every transcription.
_DECODE_TIME = (
    "beam_size", "batch_size", "temperatures", "compression_ratio_threshold", "log_prob_threshold",
    "no_speech_threshold", "hallucination_silence_threshold", "loop_repetition_penalty", "loop_no_repeat_ngram_size",
    "word_timestamps",
    "drop_hallucinations", "vad_filter", "vad_threshold", "vad_min_speech_ms", "vad_min_silence_ms",
    "vad_speech_pad_ms", "vad_max_speech_s", "chunk_s", "short_window_s", "short_window_margin_s", "languages",
    "language_windows",
)  # fmt: skip


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class TranscriptionSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCRIBE_TRANSCRIPTION_", extra="ignore", populate_by_name=True, env_parse_none_str="none"
    )

    service_name: str = "transcription"
    model_dir: str | None = Field(
        default=None, description="A CTranslate2 Whisper model folder; default: Whisper base from the wheels."
    )
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="Where the model runs.")
    compute_type: str = Field(default="int8", description="CTranslate2 compute type (int8, float16, ...).")
    cpu_threads: int = Field(default=1, ge=0, le=64, description="Threads per transcription (0: library default).")
    num_workers: int = Field(default=2, ge=1, le=32, description="Transcriptions the model runs at once.")
    beam_size: int = Field(default=5, ge=1, le=10, description="Beam search width.")
    batch_size: int = Field(
        default=0, ge=0, le=64,
        description="0: sequential decoding; >0: faster-whisper's batched pipeline with this many windows at once.",
    )  # fmt: skip
    temperatures: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(0.0,), min_length=1,
        description="Temperature fallback, tried in order on windows that fail the checks; one value: no fallback.",
    )  # fmt: skip
    compression_ratio_threshold: float | None = Field(
        default=2.4, gt=0, description="A window's text more compressible than this is a repetition loop."
    )
    log_prob_threshold: float | None = Field(
        default=-1.5, description="A window below this mean log-probability fails (fallback; silence if no-speech)."
    )
    no_speech_threshold: float | None = Field(
        default=0.6, ge=0, le=1,
        description="A window above this no-speech probability that fails log_prob_threshold is silence.",
    )  # fmt: skip
    hallucination_silence_threshold: float | None = Field(
        default=None, gt=0, description="Skip silences longer than this (s) around likely hallucinations."
    )
    loop_repetition_penalty: float | None = Field(
        default=1.1, ge=1, description="Repetition penalty of the retry of a window caught in a loop; none: no retry."
    )
    loop_no_repeat_ngram_size: int = Field(
        default=4, ge=0, description="That retry may not repeat an n-gram this long (0: any repeat allowed)."
    )
    word_timestamps: bool = Field(default=True, description="Time every word (needed by diarization).")
    drop_hallucinations: bool = Field(
        default=True, description="Drop known hallucination phrases heard on low-confidence audio."
    )
    vad_filter: bool = Field(default=True, description="Decode only what Silero VAD calls speech.")
    vad_threshold: float = Field(default=0.5, gt=0, lt=1, description="Silero VAD speech probability threshold.")
    vad_min_speech_ms: int = Field(default=0, ge=0, description="Drop speech regions shorter than this.")
    vad_min_silence_ms: int = Field(default=1000, ge=0, description="Pauses shorter than this stay in a region.")
    vad_speech_pad_ms: int = Field(default=400, ge=0, description="Padding added to each side of a region.")
    vad_max_speech_s: float = Field(default=30.0, gt=1, description="Regions longer than this are split.")
    chunk_s: float = Field(
        default=300.0, ge=30, description="Audio is read and decoded in chunks of about this length (cut in pauses)."
    )
    short_window_s: float = Field(
        default=10.0, ge=0, le=30,
        description="A last window of speech under 30 s is encoded at its length (at least this); 0: always 30 s.",
    )  # fmt: skip
    short_window_margin_s: float = Field(
        default=8.0, ge=0, le=30, description="Silence added after the speech of a short window."
    )
    languages: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("pt", "en", "es"),
        description="Languages detection picks from, the main one first; empty: any. A note's hint may name another.",
    )  # fmt: skip
    language_windows: int = Field(
        default=5, ge=1, le=20, description="30 s windows of speech, spread over the audio, that detection hears."
    )
    diarization: bool = Field(
        default=True, description="Label speakers doctor/patient (voice encoder + roles); off: all unspecified."
    )
    diarization_weights_dir: Path | None = Field(
        default=None, description="Where the voice encoder's converted weights are cached; default <data_dir>/models."
    )
    diarization_threshold: float = Field(
        default=0.3, gt=0, lt=2, description="Cosine distance under which two voices are one speaker."
    )
    max_speakers: int = Field(default=6, ge=1, le=20, description="At most this many speakers in a recording.")
    progress_interval_s: float = Field(
        default=5.0, gt=0, description="A running job publishes its progress at most this often."
    )
    max_rpc_audio_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest audio accepted by the Transcribe RPC."
    )
    job_lease_s: float = Field(
        default=60.0, gt=0, description="A running job not renewed this long is taken over by another worker."
    )
    max_job_tries: int = Field(default=3, ge=1, description="Tries of a job that errors before it fails.")

    @field_validator("temperatures", "languages", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("languages")
    @classmethod
    def _lowercase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(code.lower() for code in value)

    def resolved_diarization_weights_dir(self) -> Path:
        return (self.diarization_weights_dir or self.data_dir / "models").resolve()

    def decode_options(self) -> dict[str, Any]:
        """The ``EngineConfig`` fields read at every transcription (``WhisperEngine.with_options``)."""
        return {name: getattr(self, name) for name in _DECODE_TIME}

    def engine_config(self, model_dir: Path) -> EngineConfig:
        """The whole ``EngineConfig`` for the model in ``model_dir``."""
        return EngineConfig(
            model_dir=model_dir, **{name: getattr(self, name) for name in _LOAD_TIME}, **self.decode_options()
        )
