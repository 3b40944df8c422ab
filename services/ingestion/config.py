"""Ingestion settings (``SCRIBE_INGESTION_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class IngestionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIBE_INGESTION_", extra="ignore", populate_by_name=True)

    service_name: str = "ingestion"
    max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, description="Largest audio upload accepted, in bytes."
    )
    max_duration_s: float = Field(default=4 * 3600, gt=0, description="Longest recording accepted, in seconds.")
    redrive_after_s: float = Field(
        default=300.0, gt=0, description="A note without a terminal event this long after its last drive is re-driven."
    )
    redrive_max_interval_s: float = Field(default=1800.0, gt=0, description="Cap of the re-drive back-off.")
    redrive_check_s: float = Field(default=10.0, gt=0, description="How often stuck notes are looked for.")
