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
    blob_backend: Literal["local", "s3"] = shared(
        "blob_backend", default="local", description="Where audio objects live: a local folder or an S3 bucket."
    )
    blob_s3_bucket: str | None = shared(
        "blob_s3_bucket", default=None, min_length=3, max_length=63, description="S3 bucket (backend s3)."
    )
    blob_s3_prefix: str = shared(
        "blob_s3_prefix", default="", max_length=512, description="Key prefix of every object in the bucket."
    )
    blob_s3_endpoint_url: str | None = shared(
        "blob_s3_endpoint_url", default=None, description="S3-compatible endpoint (MinIO, Ceph, moto); default AWS."
    )
    blob_s3_region: str | None = shared("blob_s3_region", default=None, description="S3 region; default boto3's.")
    blob_s3_addressing_style: Literal["auto", "path", "virtual"] = shared(
        "blob_s3_addressing_style", default="auto", description="Bucket in the host name (virtual) or the path."
    )
    blob_s3_access_key_id: SecretStr | None = shared(
        "blob_s3_access_key_id", default=None, description="Access key id; default boto3's credential chain."
    )
    blob_s3_secret_access_key: SecretStr | None = shared(
        "blob_s3_secret_access_key", default=None, description="Secret access key (with the access key id)."
    )
    blob_s3_multipart_bytes: int = shared(
        "blob_s3_multipart_bytes", default=16 * 1024 * 1024, ge=5 * 1024 * 1024,
        description="Objects over this size are uploaded in parts of this size.",
    )
    blob_encryption_key: SecretStr | None = shared(
        "blob_encryption_key", default=None,
        description="Base64 of 32 bytes: the AES-256 key new objects are encrypted with. "
        "Unset in development: a key generated once under <data_dir>/run.",
    )
    blob_decryption_keys: SecretStr | None = shared(
        "blob_decryption_keys", default=None,
        description="Comma-separated base64 keys of objects written before a rotation (still readable).",
    )
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

    def resolved_staging_dir(self) -> Path:
        """Where uploads are staged and decrypted copies made: the blob folder's, or <data_dir>/staging."""
        if self.blob_backend == "local":
            return self.resolved_blob_dir() / ".staging"
        return (self.data_dir / "staging").resolve()

    def check_secret(self, value: SecretStr | None, name: str) -> None:
        """Refuse a missing or placeholder secret outside development."""
        if self.environment != "development" and (value is None or value.get_secret_value() in PLACEHOLDER_SECRETS):
            raise ValueError(f"{name} must be set to a real secret when SCRIBE_ENVIRONMENT={self.environment}")

    @model_validator(mode="after")
    def _check(self) -> "ServiceSettings":
        if self.blob_backend == "s3" and not self.blob_s3_bucket:
            raise ValueError("SCRIBE_BLOB_S3_BUCKET is required when SCRIBE_BLOB_BACKEND=s3")
        if (self.blob_s3_access_key_id is None) != (self.blob_s3_secret_access_key is None):
            raise ValueError("SCRIBE_BLOB_S3_ACCESS_KEY_ID and SCRIBE_BLOB_S3_SECRET_ACCESS_KEY go together")
        return self
