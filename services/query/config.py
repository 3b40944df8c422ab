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
