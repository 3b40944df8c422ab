"""Probes: ``/healthz`` (the process is up) and ``/readyz`` (every dependency answers)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from sqlalchemy import text

from gateway.dependencies import BackendStubs, Settings
from gateway.errors import ApiError
from gateway.schemas import HealthResponse, ReadyResponse, error_responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process is up")
async def healthz() -> HealthResponse:
    """Always 200 while the process serves HTTP; it checks nothing else, so a restart cannot fix it."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every backend is SERVING and the database answers",
    responses=error_responses(503),
)
async def readyz(request: Request, backends: BackendStubs, settings: Settings) -> ReadyResponse:
    """200 when each backend's gRPC health check answers SERVING; else 503 naming the ones that do not."""
    checks = await backends.health(settings.ready_timeout_s)
    checks["database"] = await _database(request, settings.ready_timeout_s)
    failing = sorted(name for name, state in checks.items() if state != "serving")
    if failing:
        raise ApiError(
            503,
            "NOT_READY",
            f"Not ready: {', '.join(failing)}",
            {"failing": failing, "checks": checks},
        )
    return ReadyResponse(status="ready", checks=checks)


async def _database(request: Request, timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        log.warning("database check failed", extra={"error": type(exc).__name__})
        return "unavailable"
    return "serving"
