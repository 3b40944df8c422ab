"""A gRPC server that only answers the standard health check: a stand-in for a backend a test
needs to be up (for /readyz) but does not otherwise call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio


@asynccontextmanager
async def health_only_server(serving: bool = True) -> AsyncIterator[str]:
    """Serve health on a free local port; yields its address."""
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    await health.set("", status)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
