"""Errors over gRPC: a status code plus Scribe's error code, message and details.

Servers abort with :func:`abort`; the code and details travel in trailing metadata so that the
gateway can answer the public error envelope (``{error, message, code, details}``) exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NoReturn

import grpc

CODE_KEY = "scribe-error-code"
DETAILS_KEY = "scribe-error-details"


@dataclass
class ServiceError(Exception):
    """A failure a handler reports to its caller, independent of the transport."""

    status: grpc.StatusCode
    code: str
    message: str
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


async def abort(context: grpc.aio.ServicerContext, error: ServiceError) -> NoReturn:
    context.set_trailing_metadata(
        ((CODE_KEY, error.code), (DETAILS_KEY, json.dumps(error.details, ensure_ascii=True)))
    )
    await context.abort(error.status, error.message)
    raise AssertionError("unreachable")


def from_rpc_error(exc: grpc.aio.AioRpcError) -> ServiceError:
    """Recover the ServiceError an upstream server aborted with (or a generic one)."""
    code, details = "", {}
    for key, value in exc.trailing_metadata() or ():
        if key == CODE_KEY:
            code = value
        elif key == DETAILS_KEY:
            try:
                details = json.loads(value)
            except ValueError:
                details = {}
    return ServiceError(exc.code(), code, exc.details() or "", details)
