"""Note generation settings (``SCRIBE_NOTEGEN_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings, shared


class NotegenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIBE_NOTEGEN_", extra="ignore", populate_by_name=True)

    service_name: str = "notegen"
    min_words: int = Field(default=12, ge=1, description="Fewer clinical words than this: no note (too short).")
    domain: Literal["veterinary", "human"] = Field(default="veterinary", description="Default consultation domain.")
    llm_base_url: str | None = shared(
        "llm_base_url",
        default=None,
        description="Base URL of an OpenAI-compatible chat endpoint (…/v1); set to use the LLM generator.",
    )
    llm_model: str = shared("llm_model", default="default", description="Model name sent to the LLM endpoint.")
    llm_api_key: SecretStr | None = shared("llm_api_key", default=None, description="Bearer key of the LLM endpoint.")
    llm_timeout_s: float = shared("llm_timeout_s", default=60.0, gt=0, description="Deadline of one LLM call.")
