"""Settings shared by every service, read from the environment (pydantic-settings).

Each service subclasses :class:`ServiceSettings` with its own prefix (``SCRIBE_INGESTION_`` ...)
for its own fields; the fields below are deployment-wide and read from ``SCRIBE_*`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", ""}


def shared(name: str, **kwargs):
    """A field read from the deployment-wide ``SCRIBE_<NAME>`` variable, whatever the prefix."""
    return Field(validation_alias=AliasChoices(f"SCRIBE_{name.upper()}"), **kwargs)


class ServiceSettings(BaseSettings):
    """Deployment-wide settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="SCRIBE_", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = shared(
        "environment", default="development", description="Refuse placeholder secrets outside development."
    )
    data_dir: Path = shared("data_dir", default=Path("./var"), description="Root of SQLite files and local blobs.")
    log_level: str = shared("log_level", default="INFO", description="Root log level.")
    metrics_port: int = shared(
        "metrics_port", default=0, ge=0, le=65535, description="Port of the Prometheus /metrics server; 0: none."
    )
    metrics_host: str = shared("metrics_host", default="127.0.0.1", description="Interface /metrics binds.")
    otlp_endpoint: str | None = shared(
        "otlp_endpoint",
        default=None,
        description="OTLP/gRPC collector for traces (http://host:4317); else OTEL_EXPORTER_OTLP_ENDPOINT; else none.",
    )
    kafka_bootstrap: str = shared(
        "kafka_bootstrap", default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    topic_prefix: str = shared("topic_prefix", default="scribe", description="Prefix of every topic name.")
    topic_partitions: int = shared(
        "topic_partitions", default=6, ge=1, le=1024, description="Partitions of every topic created at start-up."
    )
    max_event_bytes: int = shared(
        "max_event_bytes", default=8 * 1024 * 1024, ge=1024, description="Largest event the producer sends."
    )
    blob_dir: Path | None = shared("blob_dir", default=None, description="Local blob folder; default <data_dir>/blobs.")
    grpc_host: str = Field(default="127.0.0.1", description="Interface the gRPC server binds.")
    grpc_port: int = Field(default=0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default a SQLite file under data_dir."
    )
    shutdown_grace_s: float = Field(default=20.0, gt=0, description="Seconds SIGTERM waits for in-flight work.")
    outbox_poll_s: float = Field(default=0.5, gt=0, description="Outbox relay poll interval when idle.")

    service_name: str = "scribe"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"

    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    def check_secret(self, value: SecretStr | None, name: str) -> None:
        """Refuse a missing or placeholder secret outside development."""
        if self.environment != "development" and (value is None or value.get_secret_value() in PLACEHOLDER_SECRETS):
            raise ValueError(f"{name} must be set to a real secret when SCRIBE_ENVIRONMENT={self.environment}")

    @model_validator(mode="after")
    def _check(self) -> "ServiceSettings":
        return self
