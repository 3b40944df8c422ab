"""``/webhooks/v1``: a tenant's webhook (callback URL, signing secret and its rotation) and the log of
every delivery with every attempt, and replay. Deliveries themselves are made by the query service.

How a receiver checks a call: ``X-Scribe-Signature`` holds ``v1=<hex>`` (one per valid secret
during a rotation, comma separated), hex being HMAC-SHA256 of ``X-Scribe-Timestamp + "." + body``
under the tenant's secret. Reject old timestamps to stop replays.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gateway.dependencies import Admin, BackendStubs, Settings
from gateway.presenters import iso_utc
from gateway.ratelimit import Limited, LimitedEditor
from gateway.schemas import error_responses
from scribe.query.v1 import query_pb2 as pb

router = APIRouter(prefix="/webhooks/v1", tags=["webhooks"])


class WebhookConfig(BaseModel):
    url: str = Field(description="Tenant-wide callback URL; empty: none (per-request callback_url still works).")
    secret_prefix: str = Field(description="First characters of the current secret; never the secret.")
    previous_secret_expires_at: str | None = Field(
        default=None, description="While set, the rotated-out secret still signs every call too."
    )
    updated_at: str | None = None
    secret: str | None = Field(
        default=None, description="The signing secret: only in the answer that created or rotated it."
    )


class WebhookConfigResponse(BaseModel):
    data: WebhookConfig
    meta: dict = Field(default_factory=dict)


class WebhookConfigIn(BaseModel):
    url: str = Field(max_length=2048, examples=["https://clinic.example/scribe-webhook"])


class RotateIn(BaseModel):
    overlap_s: int = Field(
        default=0, ge=0, le=30 * 86400, description="How long the previous secret stays valid; 0: the default (24 h)."
    )


class WebhookAttempt(BaseModel):
    attempt: int
    status_code: int | None = Field(default=None, description="The receiver's HTTP status; absent when none came.")
    error: str | None = Field(default=None, description="timeout or connection error, when no answer came.")
    duration_ms: int
    attempted_at: str | None = None


class WebhookDelivery(BaseModel):
    id: str
    request_id: str = Field(description="The note or async transcription the call is about.")
    event: str = Field(examples=["transcription.succeeded", "note.completed", "note.failed"])
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    created_at: str | None = None
    next_attempt_at: str | None = Field(default=None, description="When the next attempt is due (pending only).")
    deadline: str | None = Field(default=None, description="Retries stop after this time.")
    last_status_code: int | None = None
    last_error: str | None = None
    attempts: list[WebhookAttempt] | None = Field(default=None, description="Every attempt (detail only).")


class WebhookDeliveryResponse(BaseModel):
    data: WebhookDelivery
    meta: dict = Field(default_factory=dict)


class WebhookDeliveryListResponse(BaseModel):
    data: list[WebhookDelivery]
    meta: dict = Field(default_factory=dict)


def _config(config: pb.WebhookConfig, secret: str = "") -> WebhookConfig:
    return WebhookConfig(
        url=config.url,
        secret_prefix=config.secret_prefix,
        previous_secret_expires_at=iso_utc(config.previous_secret_expires_at),
        updated_at=iso_utc(config.updated_at),
        secret=secret or None,
    )


def _delivery(delivery: pb.WebhookDelivery, with_attempts: bool) -> WebhookDelivery:
    return WebhookDelivery(
        id=delivery.delivery_id,
        request_id=delivery.request_id,
        event=delivery.event,
        url=delivery.url,
        status=delivery.status,  # type: ignore[arg-type]
        attempt_count=delivery.attempt_count,
        created_at=iso_utc(delivery.created_at),
        next_attempt_at=iso_utc(delivery.next_attempt_at) if delivery.status == "pending" else None,
        deadline=iso_utc(delivery.deadline),
        last_status_code=delivery.last_status_code or None,
        last_error=delivery.last_error or None,
        attempts=[
            WebhookAttempt(
                attempt=attempt.attempt,
                status_code=attempt.status_code or None,
                error=attempt.error or None,
                duration_ms=attempt.duration_ms,
                attempted_at=iso_utc(attempt.attempted_at),
            )
            for attempt in delivery.attempts
        ]
        if with_attempts
        else None,
    )


DeliveryId = Annotated[str, Path(max_length=36, description="The delivery's id.")]


@router.put(
    "/config",
    response_model=WebhookConfigResponse,
    response_model_exclude_none=True,
    summary="Set the tenant's webhook URL (the first call also creates the signing secret, shown once)",
    responses=error_responses(400, 401, 403, 429, 500, 503, 504),
)
async def put_webhook_config(
    principal: Admin, body: WebhookConfigIn, backends: BackendStubs, settings: Settings
) -> WebhookConfigResponse:
    answer = await backends.query.PutWebhookConfig(
        pb.PutWebhookConfigRequest(tenant_id=principal.tenant_id, url=body.url.strip()), timeout=settings.rpc_timeout_s
    )
    return WebhookConfigResponse(data=_config(answer.config, answer.secret))


@router.get(
    "/config",
    response_model=WebhookConfigResponse,
    response_model_exclude_none=True,
    summary="The tenant's webhook URL and secret state (never the secret)",
    responses=error_responses(401, 429, 500, 503, 504),
)
async def get_webhook_config(principal: Limited, backends: BackendStubs, settings: Settings) -> WebhookConfigResponse:
    answer = await backends.query.GetWebhookConfig(
        pb.GetWebhookConfigRequest(tenant_id=principal.tenant_id), timeout=settings.rpc_timeout_s
    )
    return WebhookConfigResponse(data=_config(answer.config))


@router.post(
    "/secret/rotate",
    response_model=WebhookConfigResponse,
    response_model_exclude_none=True,
    summary="A new signing secret (shown once); the previous one keeps signing during the overlap",
    responses=error_responses(400, 401, 403, 429, 500, 503, 504),
)
async def rotate_webhook_secret(
    principal: Admin, backends: BackendStubs, settings: Settings, body: RotateIn | None = None
) -> WebhookConfigResponse:
    answer = await backends.query.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(tenant_id=principal.tenant_id, overlap_s=body.overlap_s if body else 0),
        timeout=settings.rpc_timeout_s,
    )
    return WebhookConfigResponse(data=_config(answer.config, answer.secret))


@router.get(
    "/deliveries",
    response_model=WebhookDeliveryListResponse,
    response_model_exclude_none=True,
    summary="The tenant's webhook deliveries, newest first",
    responses=error_responses(400, 401, 429, 500, 503, 504),
)
async def list_webhook_deliveries(
    principal: Limited,
    backends: BackendStubs,
    settings: Settings,
    request_id: Annotated[str | None, Query(max_length=36, description="Only this request's deliveries.")] = None,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> WebhookDeliveryListResponse:
    answer = await backends.query.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(
            tenant_id=principal.tenant_id, request_id=(request_id or "").lower(), status=status or "", limit=limit
        ),
        timeout=settings.rpc_timeout_s,
    )
    return WebhookDeliveryListResponse(data=[_delivery(item, with_attempts=False) for item in answer.deliveries])


@router.get(
    "/deliveries/{delivery_id}",
    response_model=WebhookDeliveryResponse,
    response_model_exclude_none=True,
    summary="One delivery with every attempt (status code, error, duration)",
    responses=error_responses(400, 401, 404, 429, 500, 503, 504),
)
async def get_webhook_delivery(
    principal: Limited, delivery_id: DeliveryId, backends: BackendStubs, settings: Settings
) -> WebhookDeliveryResponse:
    answer = await backends.query.GetWebhookDelivery(
        pb.GetWebhookDeliveryRequest(tenant_id=principal.tenant_id, delivery_id=delivery_id),
        timeout=settings.rpc_timeout_s,
    )
    return WebhookDeliveryResponse(data=_delivery(answer.delivery, with_attempts=True))


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=WebhookDeliveryResponse,
    response_model_exclude_none=True,
    summary="Deliver again (the delivery goes back to pending with a fresh retry window)",
    responses=error_responses(400, 401, 403, 404, 429, 500, 503, 504),
)
async def replay_webhook_delivery(
    principal: LimitedEditor, delivery_id: DeliveryId, backends: BackendStubs, settings: Settings
) -> WebhookDeliveryResponse:
    answer = await backends.query.ReplayWebhookDelivery(
        pb.ReplayWebhookDeliveryRequest(tenant_id=principal.tenant_id, delivery_id=delivery_id),
        timeout=settings.rpc_timeout_s,
    )
    return WebhookDeliveryResponse(data=_delivery(answer.delivery, with_attempts=True))
