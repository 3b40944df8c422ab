"""Run the gateway app in-process for a test: its lifespan entered, an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
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


@asynccontextmanager
async def gateway_backends(tmp_path: Path, broker: str, **ingestion_overrides: Any) -> AsyncIterator[dict[str, str]]:
    """Real ingestion and query services on the real broker; health-only notegen and transcription.

    The routes these tests call never reach notegen or transcription: /readyz only asks for their
    health, so a health-only gRPC server stands in for each. Yields every backend's address.
    """
    # Imported here: tests that only need the app settings should not pay for the services.
    from services.ingestion.config import IngestionSettings
    from services.ingestion.server import build_service as build_ingestion
    from services.query.config import QuerySettings
    from services.query.server import build_service as build_query
    from tests.support.grpc_health import health_only_server

    topic_prefix = f"t{uuid.uuid4().hex[:10]}"
    async with AsyncExitStack() as stack:
        ingestion = await build_ingestion(
            IngestionSettings(
                data_dir=tmp_path / "ingestion",
                kafka_bootstrap=broker,
                topic_prefix=topic_prefix,
                shutdown_grace_s=5,
                **ingestion_overrides,
            )
        )
        stack.push_async_callback(ingestion.runtime.shutdown, "test over")
        ingestion_addr = f"127.0.0.1:{ingestion.runtime.port}"
        query = await build_query(
            QuerySettings(
                data_dir=tmp_path / "query",
                kafka_bootstrap=broker,
                topic_prefix=topic_prefix,
                ingestion_addr=ingestion_addr,
                shutdown_grace_s=5,
            )
        )
        stack.push_async_callback(query.runtime.shutdown, "test over")
        notegen = await stack.enter_async_context(health_only_server())
        transcription = await stack.enter_async_context(health_only_server())
        yield {
            "ingestion": ingestion_addr,
            "query": f"127.0.0.1:{query.runtime.port}",
            "notegen": notegen,
            "transcription": transcription,
        }
