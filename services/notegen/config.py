"""Note generation settings (``SCRIBE_NOTEGEN_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class NotegenSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIBE_NOTEGEN_", extra="ignore", populate_by_name=True)

    service_name: str = "notegen"
    min_words: int = Field(default=12, ge=1, description="Fewer clinical words than this: no note (too short).")
    domain: Literal["veterinary", "human"] = Field(default="veterinary", description="Default consultation domain.")
