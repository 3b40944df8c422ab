"""Query settings (``SCRIBE_QUERY_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class QuerySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIBE_QUERY_", extra="ignore", populate_by_name=True)

    service_name: str = "query"
    ingestion_addr: str | None = Field(
        default=None,
        description="gRPC address (host:port) of ingestion, asked about notes not projected yet (read-your-writes).",
    )
    read_your_writes_wait_s: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description="Longest a read of a note unknown to the read model waits for its projection.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Deadline of one webhook HTTP call (connect + answer)."
    )
    webhook_retry_window_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="How long a delivery is retried (timeouts, 5xx, connection errors) before it ends failed.",
    )
    webhook_backoff_base_s: float = Field(
        default=5.0, gt=0, description="Wait before the first retry; doubled at each further retry."
    )
    webhook_backoff_max_s: float = Field(default=900.0, gt=0, description="Longest wait between two attempts.")
    webhook_concurrency: int = Field(default=8, ge=1, le=256, description="Webhook calls in flight at once.")
    webhook_poll_s: float = Field(default=1.0, gt=0, description="How often the delivery worker looks for due calls.")
    webhook_rotation_overlap_s: int = Field(
        default=24 * 3600, ge=0, description="How long a rotated-out signing secret stays valid (and signs) by default."
    )
