"""Gateway settings (``SCRIBE_GATEWAY_*``, plus the deployment-wide ``SCRIBE_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import PLACEHOLDER_SECRETS, ServiceSettings, shared

BACKENDS = ("ingestion", "query", "notegen", "transcription")
MIN_BOOTSTRAP_KEY_CHARS = 16


class GatewaySettings(ServiceSettings):
    """Everything the gateway reads from the environment; the backend addresses are required."""

    model_config = SettingsConfigDict(env_prefix="SCRIBE_GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    http_host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    http_port: int = shared("http_port", default=8080, ge=0, le=65535, description="Port the HTTP server binds.")
    bootstrap_api_key: SecretStr | None = shared(
        "bootstrap_api_key",
        default=None,
        description="Admin key of the default tenant; when unset one is generated and printed once.",
    )
    ingestion_addr: str = Field(description="host:port of the ingestion service.")
    query_addr: str = Field(description="host:port of the query service.")
    notegen_addr: str = Field(description="host:port of the notegen service.")
    transcription_addr: str = Field(description="host:port of the transcription service.")
    public_base_url: str | None = Field(
        default=None, description="Base of absolute URLs handed to clients; default derived from the request."
    )
    upload_chunk_bytes: int = Field(
        default=256 * 1024, ge=1024, le=4 * 1024 * 1024, description="Size of each audio chunk sent to ingestion."
    )
    max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, description="Largest audio accepted; bigger bodies are refused unread."
    )
    max_json_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest JSON request body (e.g. a transcript to /generate-note)."
    )
    rpc_timeout_s: float = Field(default=15.0, gt=0, description="Deadline of a read call to a backend.")
    upload_timeout_s: float = Field(default=600.0, gt=0, description="Deadline of a whole audio upload to ingestion.")
    smart_feedback_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Smart Feedback answers 408 when it cannot answer within this time."
    )
    ready_timeout_s: float = Field(default=1.0, gt=0, description="Deadline of each health check behind /readyz.")
    redis_url: SecretStr | None = shared(
        "redis_url",
        default=None,
        description="redis://, rediss:// or unix:// URL of the Redis that holds the rate-limit windows, so "
        "that every gateway replica shares one budget per key; unset: in this process only. When it is "
        "unreachable the gateway serves without limits (fail open) and logs a warning.",
    )
    key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a looked-up API key is trusted without asking the database again; a key "
        "revoked on another replica or by scribe-admin stops working within this time. 0 disables the cache.",
    )
    rate_limit_per_minute: int = Field(
        default=100, ge=1, description="Requests per API key per moving minute, unless the key has its own."
    )
    rate_limit_per_hour: int = Field(
        default=1000, ge=1, description="Requests per API key per moving hour, unless the key has its own."
    )
    rate_limit_key_prefix: str = Field(
        default="scribe:ratelimit",
        min_length=1,
        description="Prefix of the rate-limit keys in Redis; deployments (or tests) sharing a Redis keep "
        "separate budgets by using different prefixes.",
    )

    @field_validator("ingestion_addr", "query_addr", "notegen_addr", "transcription_addr")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {value!r}")
        return value.strip()

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_base_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _bootstrap_key(self) -> GatewaySettings:
        # A weak key that an operator typed into a manifest must not become a production admin key.
        key = self.bootstrap_api_key
        if key is not None and not key.get_secret_value().strip():
            # An empty variable in a manifest means "not set": generate one.
            self.bootstrap_api_key = key = None
        if key is not None and self.environment != "development":
            value = key.get_secret_value()
            if value in PLACEHOLDER_SECRETS or len(value) < MIN_BOOTSTRAP_KEY_CHARS:
                raise ValueError(
                    f"SCRIBE_BOOTSTRAP_API_KEY must be a real key of {MIN_BOOTSTRAP_KEY_CHARS}+ characters "
                    f"when SCRIBE_ENVIRONMENT={self.environment}"
                )
        return self

    def backend_addresses(self) -> dict[str, str]:
        """Each backend's name and address, in a fixed order."""
        return {name: getattr(self, f"{name}_addr") for name in BACKENDS}
