"""Webhooks: a signed POST to the client when a note or an async transcription reaches a terminal
state, delivered at least once from a durable table.

The projection writes a delivery row in the same transaction as the terminal state it announces
(so a crash loses none, and a redelivered event makes none twice: ``dedup_key``). A delivery
worker in this process claims due rows with a lease, POSTs them with bounded concurrency, logs
every attempt in ``webhook_attempts`` and retries timeouts, 5xx and connection errors with
exponential back-off until the delivery's deadline; any other answer ends it. The pipeline never
waits for it.

Signature: ``X-Scribe-Signature: v1=<hex>`` where hex is HMAC-SHA256 of
``<X-Scribe-Timestamp> + "." + <raw body>`` under the tenant's secret; during a rotation one
``v1=`` per valid secret, comma separated. Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets as secrets_module
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.events import timestamp
from common.grpc_errors import ServiceError
from common.logs import log_context
from scribe.query.v1 import query_pb2 as pb
from scribe.types.v1 import types_pb2 as types
from services.query.config import QuerySettings
from services.query.models import NoteRow, WebhookAttemptRow, WebhookConfigRow, WebhookDeliveryRow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Scribe-Signature"
TIMESTAMP_HEADER = "X-Scribe-Timestamp"
DELIVERY_HEADER = "X-Scribe-Delivery"
EVENT_HEADER = "X-Scribe-Event"
SECRET_PREFIX = "whsec_"
MAX_LIST = 100
# Answers that say "try again later" although they are 4xx.
_RETRYABLE_4XX = {408, 429}
_ASYNC_STATUS = {"pending": "ongoing", "processing": "ongoing", "completed": "succeeded", "failed": "failed"}


def new_secret() -> str:
    return SECRET_PREFIX + secrets_module.token_urlsafe(32)


def sign(secret: str, timestamp_s: str, body: bytes) -> str:
    """HMAC-SHA256 (hex) of ``timestamp + "." + body`` under ``secret``."""
    return hmac.new(secret.encode(), timestamp_s.encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], timestamp_s: str, body: bytes) -> str:
    """The signature header's value: one ``v1=<hex>`` per valid secret, newest first."""
    return ", ".join(f"v1={sign(secret, timestamp_s, body)}" for secret in secrets)


# -- payloads (the very bodies the GET endpoints answer) -------------------------------------


def transcript_items(row: NoteRow) -> list[dict[str, Any]]:
    """Seed 002's transcript items, sorted by start."""
    items = [
        {
            "text": segment["text"].strip(),
            "speaker": segment.get("speaker") or "unspecified",
            "start_time_ms": int(segment["start_ms"]),
            "end_time_ms": int(segment["end_ms"]),
        }
        for segment in row.transcript or []
    ]
    return sorted(items, key=lambda item: (item["start_time_ms"], item["end_time_ms"]))


def async_transcription_body(
    request_id: str, client_request_id: str, status: str, row: NoteRow | None = None
) -> dict[str, Any]:
    """``GET /transcribe-async/{id}``'s answer (and its webhook's body) for a note row's state."""
    async_status = _ASYNC_STATUS.get(status, "ongoing")
    body: dict[str, Any] = {"id": request_id}
    if client_request_id:
        body["client_id"] = client_request_id
    body["status"] = async_status
    if row is not None and async_status == "succeeded":
        body["payload"] = {"transcript": transcript_items(row), "language": row.language}
    elif row is not None and async_status == "failed":
        body["payload"] = {"code": row.failure_code or "FAILED", "message": row.failure_message}
    return body


def note_status_body(row: NoteRow) -> dict[str, Any]:
    """The note's status answer (``GET /notes/v1/notes/{id}/status``), with its id and failure."""
    data: dict[str, Any] = {"id": row.note_id, "status": row.status, "valid": row.status != "failed"}
    if row.status == "failed":
        data["failure"] = {"code": row.failure_code, "message": row.failure_message}
    return {"data": data, "meta": {}}


def delivery_event(row: NoteRow) -> str:
    if row.kind == types.REQUEST_KIND_TRANSCRIPTION:
        return f"transcription.{_ASYNC_STATUS.get(row.status, 'ongoing')}"
    return f"note.{row.status}"


def delivery_body(row: NoteRow) -> dict[str, Any]:
    if row.kind == types.REQUEST_KIND_TRANSCRIPTION:
        return async_transcription_body(row.note_id, row.client_request_id, row.status, row)
    return note_status_body(row)


def dump(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# -- enqueue (inside the projection's transaction) -------------------------------------------


async def _config(session: AsyncSession, tenant_id: str) -> WebhookConfigRow | None:
    return await session.get(WebhookConfigRow, tenant_id)


async def _insert_delivery(
    session: AsyncSession, settings: QuerySettings, *, tenant_id: str, request_id: str, dedup_key: str, event: str,
    url: str, body: dict[str, Any],
) -> None:
    """A pending delivery, unless one with ``dedup_key`` exists; the worker is woken after commit."""
    now = utcnow()
    values = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "request_id": request_id,
        "dedup_key": dedup_key,
        "event": event,
        "url": url,
        "body": dump(body),
        "status": "pending",
        "attempt_count": 0,
        "created_at": now,
        "next_attempt_at": now,
        "deadline": now + dt.timedelta(seconds=settings.webhook_retry_window_s),
        "lease_until": None,
        "last_status_code": 0,
        "last_error": "",
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    result = await session.execute(
        dialect.insert(WebhookDeliveryRow).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    )
    if result.rowcount:
        session.sync_session.info.setdefault("after_commit", []).append(_wake_deliverers)


async def enqueue_terminal(session: AsyncSession, row: NoteRow, settings: QuerySettings) -> None:
    """A delivery for the row's terminal state when a callback URL is known (the request's own, else
    the tenant's); at most one per run and outcome, however often the events come."""
    if row.status not in ("completed", "failed"):
        return
    config = await _config(session, row.tenant_id)
    url = row.callback_url or (config.url if config is not None else "")
    if not url:
        return
    if config is None:
        # Signed deliveries need a secret: one is made, and the tenant's first PUT config answers it.
        session.add(
            WebhookConfigRow(tenant_id=row.tenant_id, url="", secret=new_secret(), secret_shown=False, updated_at=utcnow())
        )
        await session.flush()
    await _insert_delivery(
        session, settings, tenant_id=row.tenant_id, request_id=row.note_id,
        dedup_key=f"{row.note_id}:{row.run_id}:{row.status}", event=delivery_event(row), url=url,
        body=delivery_body(row),
    )


async def enqueue_follow_up(session: AsyncSession, envelope: Any, written: Any, settings: QuerySettings) -> None:
    """A delivery of a Smart Feedback follow-up (seed 003) to the tenant's webhook URL, if any."""
    config = await _config(session, envelope.tenant_id)
    if config is None or not config.url:
        return
    data: dict[str, Any] = {
        "conversationId": envelope.note_id,
        "batchId": written.batch_id,
        "status": written.status,
        "language": written.language,
        "message": written.message,
    }
    if written.status == "failed":
        data["failure"] = {"code": written.failure.code, "message": written.failure.message}
    await _insert_delivery(
        session, settings, tenant_id=envelope.tenant_id, request_id=envelope.note_id,
        dedup_key=f"follow_up:{written.follow_up_id}", event=f"follow_up.{written.status}", url=config.url,
        body={"code": 200, "message": "Success", "data": data},
    )


_deliverers: set[WebhookDeliverer] = set()


def _wake_deliverers() -> None:
    for deliverer in list(_deliverers):
        deliverer.wake()


# -- administration (the gRPC API) -----------------------------------------------------------


def _not_found() -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND", "Webhook delivery not found")


def _config_proto(config: WebhookConfigRow | None) -> pb.WebhookConfig:
    if config is None:
        return pb.WebhookConfig()
    proto = pb.WebhookConfig(url=config.url, secret_prefix=config.secret[: len(SECRET_PREFIX) + 4],
                             updated_at=timestamp(config.updated_at))
    if config.previous_secret and config.previous_expires_at and config.previous_expires_at > utcnow():
        proto.previous_secret_expires_at.CopyFrom(timestamp(config.previous_expires_at))
    return proto


def _delivery_proto(row: WebhookDeliveryRow, attempts: list[WebhookAttemptRow] | None = None) -> pb.WebhookDelivery:
    proto = pb.WebhookDelivery(
        delivery_id=row.id,
        request_id=row.request_id,
        event=row.event,
        url=row.url,
        status=row.status,
        attempt_count=row.attempt_count,
        created_at=timestamp(row.created_at),
        next_attempt_at=timestamp(row.next_attempt_at),
        deadline=timestamp(row.deadline),
        last_status_code=row.last_status_code,
        last_error=row.last_error,
    )
    for attempt in attempts or []:
        proto.attempts.append(
            pb.WebhookAttempt(
                attempt=attempt.attempt,
                status_code=attempt.status_code,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
                attempted_at=timestamp(attempt.attempted_at),
            )
        )
    return proto


def _validate_url(url: str) -> None:
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2048):
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "url must be an http:// or https:// URL",
            {"field": "url"},
        )


class WebhookAdmin:
    """A tenant's webhook settings and delivery log, behind the gRPC API."""

    def __init__(self, settings: QuerySettings, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.session_maker = session_maker

    async def put_config(self, tenant_id: str, url: str) -> tuple[pb.WebhookConfig, str]:
        _validate_url(url)
        async with self.session_maker() as session, session.begin():
            config = await session.get(WebhookConfigRow, tenant_id, with_for_update=True)
            created_secret = ""
            if config is None:
                created_secret = new_secret()
                config = WebhookConfigRow(
                    tenant_id=tenant_id, url=url, secret=created_secret, secret_shown=True, updated_at=utcnow()
                )
                session.add(config)
            else:
                config.url = url
                config.updated_at = utcnow()
                if not config.secret_shown:
                    # Made for an earlier delivery and never answered: this is the tenant's one look.
                    created_secret = config.secret
                    config.secret_shown = True
        return _config_proto(config), created_secret

    async def get_config(self, tenant_id: str) -> pb.WebhookConfig:
        async with self.session_maker() as session:
            return _config_proto(await session.get(WebhookConfigRow, tenant_id))

    async def rotate(self, tenant_id: str, overlap_s: int) -> tuple[pb.WebhookConfig, str]:
        if overlap_s < 0:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", "overlap_s must be >= 0")
        overlap = overlap_s or self.settings.webhook_rotation_overlap_s
        secret = new_secret()
        now = utcnow()
        async with self.session_maker() as session, session.begin():
            config = await session.get(WebhookConfigRow, tenant_id, with_for_update=True)
            if config is None:
                config = WebhookConfigRow(tenant_id=tenant_id, url="", secret=secret, secret_shown=True, updated_at=now)
                session.add(config)
            else:
                config.secret_shown = True
                config.previous_secret = config.secret
                config.previous_expires_at = now + dt.timedelta(seconds=overlap)
                config.secret = secret
                config.updated_at = now
        log.info("webhook secret rotated", extra={"tenant_id": tenant_id, "overlap_s": overlap})
        return _config_proto(config), secret

    async def list_deliveries(self, request: pb.ListWebhookDeliveriesRequest) -> list[pb.WebhookDelivery]:
        limit = request.limit or 50
        if not 1 <= limit <= MAX_LIST:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR", f"limit must be 1 to {MAX_LIST}")
        conditions = [WebhookDeliveryRow.tenant_id == request.tenant_id]
        if request.request_id:
            conditions.append(WebhookDeliveryRow.request_id == request.request_id)
        if request.status:
            conditions.append(WebhookDeliveryRow.status == request.status)
        async with self.session_maker() as session:
            rows = (
                await session.scalars(
                    select(WebhookDeliveryRow)
                    .where(*conditions)
                    .order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id)
                    .limit(limit)
                )
            ).all()
        return [_delivery_proto(row) for row in rows]

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> pb.WebhookDelivery:
        async with self.session_maker() as session:
            row = await session.get(WebhookDeliveryRow, delivery_id)
            if row is None or row.tenant_id != tenant_id:
                raise _not_found()
            attempts = (
                await session.scalars(
                    select(WebhookAttemptRow)
                    .where(WebhookAttemptRow.delivery_id == delivery_id)
                    .order_by(WebhookAttemptRow.attempt)
                )
            ).all()
        return _delivery_proto(row, list(attempts))

    async def replay(self, tenant_id: str, delivery_id: str) -> pb.WebhookDelivery:
        now = utcnow()
        async with self.session_maker() as session, session.begin():
            row = await session.get(WebhookDeliveryRow, delivery_id, with_for_update=True)
            if row is None or row.tenant_id != tenant_id:
                raise _not_found()
            row.status = "pending"
            row.next_attempt_at = now
            row.deadline = now + dt.timedelta(seconds=self.settings.webhook_retry_window_s)
            row.lease_until = None
            session.sync_session.info.setdefault("after_commit", []).append(_wake_deliverers)
        log.info("webhook delivery replayed", extra={"delivery_id": delivery_id, "tenant_id": tenant_id})
        return await self.get_delivery(tenant_id, delivery_id)


# -- delivery ----------------------------------------------------------------------------------


class WebhookDeliverer:
    """Claims due deliveries and POSTs them, ``webhook_concurrency`` at a time, off the pipeline."""

    def __init__(self, settings: QuerySettings, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._inflight: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        timeout = self.settings.webhook_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self.settings.webhook_concurrency * 2),
        )
        _deliverers.add(self)
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="webhook-deliverer")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        _deliverers.discard(self)
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._inflight:
            # An attempt cut short keeps its lease; another worker takes it over once it lapses.
            await asyncio.wait(self._inflight, timeout=self.settings.webhook_timeout_s)
            for task in self._inflight:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._dispatch_due()
            except Exception:
                log.exception("webhook dispatch pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.webhook_poll_s)
            self._wake.clear()

    async def _dispatch_due(self) -> None:
        free = self.settings.webhook_concurrency - len(self._inflight)
        if free <= 0:
            return
        now = utcnow()
        async with self.session_maker() as session:
            ids = (
                await session.scalars(
                    select(WebhookDeliveryRow.id)
                    .where(
                        WebhookDeliveryRow.status == "pending",
                        WebhookDeliveryRow.next_attempt_at <= now,
                        or_(WebhookDeliveryRow.lease_until.is_(None), WebhookDeliveryRow.lease_until < now),
                    )
                    .order_by(WebhookDeliveryRow.next_attempt_at)
                    .limit(free)
                )
            ).all()
        for delivery_id in ids:
            if not await self._claim(delivery_id, now):
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(delivery_id))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _claim(self, delivery_id: str, now: dt.datetime) -> bool:
        lease = now + dt.timedelta(seconds=self.settings.webhook_timeout_s * 2 + 5)
        async with self.session_maker() as session, session.begin():
            result = await session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.id == delivery_id,
                    WebhookDeliveryRow.status == "pending",
                    or_(WebhookDeliveryRow.lease_until.is_(None), WebhookDeliveryRow.lease_until < now),
                )
                .values(lease_until=lease)
            )
        return result.rowcount == 1

    async def _signing_secrets(self, tenant_id: str) -> list[str]:
        async with self.session_maker() as session:
            config = await session.get(WebhookConfigRow, tenant_id)
        if config is None:
            return []
        secrets = [config.secret]
        if config.previous_secret and config.previous_expires_at and config.previous_expires_at > utcnow():
            secrets.append(config.previous_secret)
        return secrets

    async def _deliver(self, delivery_id: str) -> None:
        async with self._slots:
            try:
                await self._attempt(delivery_id)
            except Exception:
                log.exception("webhook attempt failed unexpectedly", extra={"delivery_id": delivery_id})

    async def _attempt(self, delivery_id: str) -> None:
        async with self.session_maker() as session:
            row = await session.get(WebhookDeliveryRow, delivery_id)
        if row is None:
            return
        assert self._client is not None
        body = row.body.encode()
        secrets = await self._signing_secrets(row.tenant_id)
        timestamp_s = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": "Scribe-Webhooks/1",
            TIMESTAMP_HEADER: timestamp_s,
            SIGNATURE_HEADER: signature_header(secrets, timestamp_s, body),
            DELIVERY_HEADER: row.id,
            EVENT_HEADER: row.event,
        }
        attempt = row.attempt_count + 1
        started = time.perf_counter()
        status_code, error = 0, ""
        try:
            response = await self._client.post(row.url, content=body, headers=headers)
            status_code = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: connection failed"
        duration_ms = int((time.perf_counter() - started) * 1000)
        now = utcnow()
        if 200 <= status_code < 300:
            outcome = "succeeded"
        elif status_code and status_code < 500 and status_code not in _RETRYABLE_4XX:
            outcome = "failed"  # the receiver refused it: sending it again would not help
        else:
            backoff = min(
                self.settings.webhook_backoff_base_s * 2 ** (attempt - 1), self.settings.webhook_backoff_max_s
            ) * random.uniform(0.9, 1.1)
            next_at = now + dt.timedelta(seconds=backoff)
            outcome = "pending" if next_at <= row.deadline else "failed"
        async with self.session_maker() as session, session.begin():
            if await session.get(WebhookDeliveryRow, row.id, with_for_update=True) is None:
                return  # deleted meanwhile, with its note
            session.add(
                WebhookAttemptRow(
                    delivery_id=row.id, attempt=attempt, status_code=status_code, error=error,
                    duration_ms=duration_ms, attempted_at=now,
                )
            )
            values: dict[str, Any] = {
                "attempt_count": attempt,
                "status": outcome,
                "last_status_code": status_code,
                "last_error": error,
                "lease_until": None,
            }
            if outcome == "pending":
                values["next_attempt_at"] = next_at
            await session.execute(update(WebhookDeliveryRow).where(WebhookDeliveryRow.id == row.id).values(**values))
        with log_context(note_id=row.request_id, tenant_id=row.tenant_id):
            log.info(
                "webhook attempt",
                extra={
                    "delivery_id": row.id,
                    "event": row.event,
                    "host": urlsplit(row.url).hostname,
                    "attempt": attempt,
                    "status_code": status_code,
                    "error": error,
                    "duration_ms": duration_ms,
                    "outcome": outcome,
                },
            )
