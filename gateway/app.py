"""The gateway's composition root: ``create_app(settings)`` builds the FastAPI application.

Nothing is opened at import or in ``create_app``; the lifespan migrates the database, makes sure
the default tenant and its admin key exist, and opens one long-lived gRPC channel per backend,
then closes them all on shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.db import create_engine, migrate, session_factory
from common.telemetry import HTTP_REQUEST_DURATION, HTTP_REQUESTS, SERVICE_ATTRIBUTE, context_from, tracer
from gateway.backends import Backends
from gateway.config import GatewaySettings
from gateway.errors import BodySizeLimitMiddleware, install_error_handlers
from gateway.keys import ApiKeyStore
from gateway.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from gateway.routes import (
    generate,
    health,
    note_actions,
    notes,
    process_audio,
    smart_feedback,
    transcribe_async,
    webhooks,
)
from gateway.uploads import FORM_OVERHEAD_BYTES

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

DESCRIPTION = """\
Scribe's public Notes API: upload a consultation's audio, get back its transcript and a
structured clinical note.

Authenticate every call with the `X-API-KEY` header or `Authorization: Bearer <key>` (the same
keys). Notes API successes answer `{"data", "meta"}`; every error answers
`{"error", "message", "code", "details"}`.

Async transcription (`/transcribe-async`) answers the request itself, `{id, client_id, status,
payload}`, and POSTs the same JSON, signed, to its callback URL when it ends (see `/webhooks/v1`).
"""


def create_app(settings: GatewaySettings) -> FastAPI:
    """The gateway application; serving it runs the lifespan that opens the database and channels."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        missing = [name for name, address in settings.backend_addresses().items() if not address]
        if missing:
            raise RuntimeError(f"backend address missing: {', '.join(missing)}")
        url = settings.resolved_database_url()
        await migrate(url, MIGRATIONS)
        engine = create_engine(url)
        backends: Backends | None = None
        rate_limiter: RateLimiter | None = None
        try:
            key_store = ApiKeyStore(session_factory(engine), cache_ttl_s=settings.key_cache_ttl_s)
            bootstrap_key = settings.bootstrap_api_key.get_secret_value() if settings.bootstrap_api_key else None
            await key_store.bootstrap(bootstrap_key)
            backends = Backends.open(settings)
            rate_limiter = RateLimiter.from_settings(settings)
            app.state.rate_limiter = rate_limiter
            log.info("gateway ready", extra={"backends": settings.backend_addresses()})
            # On app.state rather than lifespan state so that any ASGI harness that enters the
            # lifespan (uvicorn, or a test's lifespan_context) gives routes the same objects.
            app.state.backends, app.state.key_store, app.state.engine = backends, key_store, engine
            yield
        finally:
            if rate_limiter is not None:
                await rate_limiter.close()
            if backends is not None:
                await backends.close()
            await engine.dispose()
            log.info("gateway stopped")

    app = FastAPI(
        title="Scribe Notes API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry spans put the query string (patient names) in ``url.query``;
        # AccessLogMiddleware makes the request span instead, with the route template only.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.include_router(notes.router)
    app.include_router(note_actions.router)
    app.include_router(generate.router)
    app.include_router(transcribe_async.router)
    app.include_router(webhooks.router)
    app.include_router(process_audio.router)
    app.include_router(smart_feedback.router)
    app.include_router(health.router)
    install_error_handlers(app)
    # Outside the error handlers, so that the limit headers reach their answers (the 429, a 500) too.
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        audio_limit=settings.max_upload_bytes,
        json_limit=settings.max_json_bytes,
        upload_paths=frozenset({"/notes/v1/notes", transcribe_async.PATH}),
        upload_prefixes=(process_audio.UPLOAD_PREFIX,),
    )
    app.add_middleware(AccessLogMiddleware)
    _document_errors_as_answered(app)
    return app


def _document_errors_as_answered(app: FastAPI) -> None:
    """Make the OpenAPI document describe errors as the gateway really answers them.

    Either key style authenticates, so each style is its own security requirement.
    FastAPI adds a 422 ``HTTPValidationError`` to every route with parameters, but validation
    errors are answered 400 in the envelope, which each route documents itself; and it files the
    error envelope of a plain-text route (the transcript) under text/plain, though errors are
    always JSON.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                # FastAPI lists the two key styles in one requirement (both needed); either will do.
                operation["security"] = [
                    {name: scopes} for requirement in operation.get("security", []) for name, scopes in requirement.items()
                ] or operation.get("security", [])
                if not operation["security"]:
                    del operation["security"]
                responses = operation.get("responses", {})
                default = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if default.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
                for response in responses.values():
                    content = response.get("content", {})
                    plain = content.get("text/plain", {}).get("schema", {})
                    if plain.get("$ref", "").endswith("/ErrorResponse"):
                        content["application/json"] = content.pop("text/plain")
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class AccessLogMiddleware:
    """Per request: a server span (continuing the caller's ``traceparent``), the request metrics,
    and one log line: method, route template, status, duration.

    The route template, not the URL: query strings carry patient names (``?name=Rex``), which
    must not reach the logs, the metric labels or the span names.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope.get("method", "")
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in (b"traceparent", b"tracestate")
        }

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer().start_as_current_span(
            method,
            context=context_from(carrier),
            kind=SpanKind.SERVER,
            attributes={SERVICE_ATTRIBUTE: "gateway", "http.request.method": method},
        ) as span:
            try:
                await self.app(scope, receive, tracking_send)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                duration_s = time.perf_counter() - started
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                HTTP_REQUESTS.labels(route, method, str(status)).inc()
                HTTP_REQUEST_DURATION.labels(route, method).observe(duration_s)
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration_s * 1000, 1),
                    },
                )
