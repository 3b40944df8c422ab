"""Run the gateway app in-process for a test: its lifespan entered, an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import GatewaySettings

TEST_API_KEY = "sk_test_gatewayTestsBootstrapKey0001"


def gateway_settings(data_dir: Path, addresses: dict[str, str], **overrides: Any) -> GatewaySettings:
    """Settings for a test gateway: its own data folder, the given backends, a known admin key."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "bootstrap_api_key": TEST_API_KEY,
        "ingestion_addr": addresses["ingestion"],
        "query_addr": addresses["query"],
        "notegen_addr": addresses["notegen"],
        "transcription_addr": addresses["transcription"],
        "rpc_timeout_s": 10.0,
        "ready_timeout_s": 1.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan started, and a client that talks to it without a socket."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield app, client
