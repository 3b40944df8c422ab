"""Every error the gateway answers, in the public envelope ``{error, message, code, details}``.

This is the one place that maps a backend's gRPC status plus Scribe error code (carried in
trailing metadata, see :mod:`common.grpc_errors`) to an HTTP status, and that turns FastAPI's own
failures (validation, unknown route, wrong method, unexpected exception) into the same envelope.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.grpc_errors import ServiceError, from_rpc_error

log = logging.getLogger(__name__)

# The envelope's "error": a stable, lowercase name of the HTTP status.
ERROR_NAMES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
    504: "gateway_timeout",
}

# gRPC status -> HTTP status, for codes no entry of CODE_STATUS overrides.
GRPC_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Scribe error codes whose HTTP status is not the one their gRPC status implies.
CODE_STATUS: dict[str, int] = {
    "PAYLOAD_TOO_LARGE": 413,
    "TRANSCRIPT_TOO_SHORT": 422,
    # The request is valid but the note is not in a state that allows it (seed: 422).
    "NOTE_NOT_READY": 422,
}

# Statuses whose upstream message is not meant for clients (it may name internals).
_OPAQUE = {500, 501, 503, 504}
_OPAQUE_MESSAGES = {
    500: ("INTERNAL_ERROR", "Internal server error"),
    501: ("NOT_IMPLEMENTED", "Not implemented"),
    503: ("SERVICE_UNAVAILABLE", "A backend service is unavailable; try again shortly"),
    504: ("GATEWAY_TIMEOUT", "A backend service did not answer in time"),
}


class ApiError(Exception):
    """An error answered to the client as the envelope, with its HTTP status."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers

    @property
    def error(self) -> str:
        return ERROR_NAMES.get(self.status_code, "error")

    def body(self) -> dict[str, Any]:
        """The envelope, as JSON-ready data."""
        return {"error": self.error, "message": self.message, "code": self.code, "details": self.details}

    def response(self) -> JSONResponse:
        """The envelope as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


class PayloadTooLarge(StarletteHTTPException):
    """Raised while the body is read once it outgrows the limit.

    An HTTPException because FastAPI passes those through while it reads a body and turns any
    other exception there into a generic 400.
    """

    def __init__(self, limit: int, audio: bool = True) -> None:
        super().__init__(status_code=413, detail="The request body is too large")
        self.limit = limit
        self.audio = audio


def _status_body(error: ApiError) -> dict[str, Any]:
    """Seed 003's error body: ``{code: <HTTP status>, message, data: null}``."""
    return {"code": error.status_code, "message": error.message, "data": None}


# Surfaces whose contract defines its own error body (path prefix -> body); every other path
# answers the envelope.
SURFACE_ERROR_BODIES: dict[str, Any] = {"/api/externalAPIs/": _status_body}


def error_response(path: str, error: ApiError) -> JSONResponse:
    """``error`` as the surface of ``path`` answers errors."""
    for prefix, body in SURFACE_ERROR_BODIES.items():
        if path.startswith(prefix):
            return JSONResponse(body(error), status_code=error.status_code, headers=error.headers)
    return error.response()


def invalid_note_id() -> ApiError:
    """The seed's 400 for a note id that is not a UUID."""
    return ApiError(400, "INVALID_NOTE_ID", "Invalid note_id format")


def unauthorized() -> ApiError:
    """The 401 for a missing, unknown, revoked or expired key (never saying which)."""
    return ApiError(401, "UNAUTHORIZED", "Invalid or missing API key")


def payload_too_large(limit: int) -> ApiError:
    """The 413 for audio over ``limit`` bytes, as ingestion answers it."""
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"The audio file is larger than {limit} bytes", {"max_bytes": limit})


def body_too_large(limit: int) -> ApiError:
    """The 413 for a (JSON) request body over ``limit`` bytes."""
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body is larger than {limit} bytes", {"max_bytes": limit})


def from_service_error(error: ServiceError) -> ApiError:
    """Map a backend's failure (gRPC status + Scribe code) to the HTTP answer."""
    status = CODE_STATUS.get(error.code) or GRPC_STATUS.get(error.status, 500)
    if status in _OPAQUE:
        code, message = _OPAQUE_MESSAGES[status]
        return ApiError(status, code, message)
    code = error.code or ERROR_NAMES.get(status, "error").upper()
    return ApiError(status, code, error.message or ERROR_NAMES.get(status, "error"), dict(error.details or {}))


def from_grpc(exc: grpc.aio.AioRpcError) -> ApiError:
    """Map a failed gRPC call to the HTTP answer."""
    return from_service_error(from_rpc_error(exc))


def _validation_details(errors: list[dict[str, Any]] | tuple[Any, ...]) -> dict[str, Any]:
    fields: dict[str, str] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(location) or "body"
        fields.setdefault(field, str(error.get("msg", "invalid value")))
    return {"fields": fields}


def validation_error(errors: list[dict[str, Any]] | tuple[Any, ...]) -> ApiError:
    """The 400 answered for request data that does not validate; ``details.fields`` says which."""
    details = _validation_details(errors)
    names = ", ".join(details["fields"])
    return ApiError(400, "VALIDATION_ERROR", f"Invalid request: {names}", details)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request.url.path, validation_error(exc.errors()))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(exc, PayloadTooLarge):
        error = payload_too_large(exc.limit) if exc.audio else body_too_large(exc.limit)
    elif status == 404:
        error = ApiError(404, "NOT_FOUND", "Route not found")
    elif status == 405:
        error = ApiError(405, "METHOD_NOT_ALLOWED", "Method not allowed")
    elif status == 413:
        error = ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
    elif status >= 500:
        error = ApiError(500, "INTERNAL_ERROR", "Internal server error")
    else:
        name = ERROR_NAMES.get(status, "error")
        error = ApiError(status, name.upper(), str(exc.detail) if exc.detail else name)
    error.headers = headers
    return error_response(request.url.path, error)


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    error = from_grpc(exc)
    if error.status_code >= 500:
        # The upstream text stays in the log, where an operator can act on it.
        log.warning(
            "backend call failed",
            extra={"grpc_status": exc.code().name, "grpc_message": exc.details(), "path": request.url.path},
        )
    return error_response(request.url.path, error)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` in the envelope."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
    app.add_middleware(UnhandledErrorMiddleware)


class UnhandledErrorMiddleware:
    """A 500 envelope, without the stack trace, for any exception nothing else handled.

    Starlette's own handler for ``Exception`` re-raises after answering, so the server logs every
    such error twice; this logs it once, here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error", extra={"method": scope.get("method"), "path": scope.get("path")})
            if started:
                raise
            error = ApiError(500, "INTERNAL_ERROR", "Internal server error")
            await error_response(scope.get("path") or "", error)(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse a request body over its limit, before reading it when Content-Length says so.

    Audio uploads (``upload_paths``, POST) may be as large as the audio limit plus the form's
    framing; every other body (JSON) has the much smaller ``json_limit``. Ingestion enforces the
    real audio limit on the audio itself; this spares the gateway from spooling an oversized body
    to disk first. Bodies without a Content-Length are counted as they arrive.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        audio_limit: int,
        json_limit: int,
        upload_paths: frozenset[str],
        upload_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.limit = limit
        self.audio_limit = audio_limit
        self.json_limit = json_limit
        self.upload_paths = upload_paths
        # Uploads whose path carries a parameter (e.g. /upload_audio/{user_id}).
        self.upload_prefixes = upload_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        upload = scope.get("method") == "POST" and (
            path in self.upload_paths or bool(self.upload_prefixes and path.startswith(self.upload_prefixes))
        )
        limit = self.limit if upload else self.json_limit
        too_large = payload_too_large(self.audio_limit) if upload else body_too_large(self.json_limit)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await ApiError(400, "BAD_REQUEST", "Invalid Content-Length").response()(scope, receive, send)
                    return
                if declared > limit:
                    response = too_large.response()
                    # The unread body makes the connection useless for a next request.
                    response.headers["connection"] = "close"
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(self.audio_limit if upload else self.json_limit, audio=upload)
            return message

        await self.app(scope, counting_receive, send)
