"""Transcription settings (``SCRIBE_TRANSCRIPTION_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class TranscriptionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIBE_TRANSCRIPTION_", extra="ignore", populate_by_name=True)

    service_name: str = "transcription"
    model_dir: str | None = Field(
        default=None, description="A CTranslate2 Whisper model folder; default: Whisper base from the wheels."
    )
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="Where the model runs.")
    compute_type: str = Field(default="int8", description="CTranslate2 compute type (int8, float16, ...).")
    cpu_threads: int = Field(default=1, ge=0, le=64, description="Threads per transcription (0: library default).")
    num_workers: int = Field(default=2, ge=1, le=32, description="Transcriptions the model runs at once.")
    beam_size: int = Field(default=5, ge=1, le=10, description="Beam search width.")
    max_rpc_audio_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest audio accepted by the Transcribe RPC."
    )
    job_lease_s: float = Field(
        default=60.0, gt=0, description="A running job not renewed this long is taken over by another worker."
    )
    max_job_tries: int = Field(default=3, ge=1, description="Tries of a job that errors before it fails.")
