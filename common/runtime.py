"""A service process's life: gRPC server with health and reflection, background work, clean exit.

``ServiceRuntime`` starts a grpc.aio server (standard health checking and reflection), runs the
service's background components (outbox relay, consumers, workers) and, on SIGTERM or SIGINT,
drains: health NOT_SERVING, stop taking work, finish or hand back in-flight work, commit offsets,
flush the outbox, close the database; then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from common.telemetry import ServerTelemetryInterceptor, client_interceptors

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServiceRuntime:
    """Owns the gRPC server and the ordered shutdown of everything the service started."""

    def __init__(self, name: str, service_names: list[str], *, host: str, port: int, grace_s: float) -> None:
        self.name = name
        self.service_names = service_names
        self.host = host
        self.requested_port = port
        self.grace_s = grace_s
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            interceptors=[ServerTelemetryInterceptor(name)],
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0
        # "drain" steps stop taking work and run while in-flight calls finish; "final" steps
        # (outbox flush, database close) run in registration order once the server has stopped.
        self._steps: dict[str, list[tuple[str, Callable[[], Awaitable[Any]]]]] = {"drain": [], "final": []}
        self._stopped = asyncio.Event()
        self._shutdown_started = False

    def on_shutdown(self, label: str, step: Callable[[], Awaitable[Any]], phase: str = "drain") -> None:
        self._steps[phase].append((label, step))

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if self.port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.host}:{self.requested_port}")
        await self.server.start()
        for service in ["", *self.service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving gRPC on %s:%d", self.name, self.host, self.port)
        return self.port

    async def _run_steps(self, phase: str) -> None:
        for label, step in self._steps[phase]:
            try:
                await asyncio.wait_for(step(), self.grace_s + 5)
            except Exception:
                log.exception("%s: shutdown step %s failed", self.name, label)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(self.shutdown(s.name)))

    async def wait(self) -> None:
        await self._stopped.wait()

    async def shutdown(self, reason: str = "requested") -> None:
        if self._shutdown_started:
            return
        self._shutdown_started = True
        log.info("%s shutting down (%s)", self.name, reason)
        await self.health.enter_graceful_shutdown()
        stop_server = asyncio.create_task(self.server.stop(self.grace_s))
        await self._run_steps("drain")
        await stop_server
        await self._run_steps("final")
        log.info("%s stopped", self.name)
        self._stopped.set()


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point helper: run ``main`` and exit 0 after a clean shutdown, 1 on a start-up failure."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except Exception:
        logging.getLogger(__name__).exception("fatal")
        sys.exit(1)
    sys.exit(0)


CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keep idle channels alive through load balancers and notice dead peers without a request.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


def open_channel(address: str) -> grpc.aio.Channel:
    """A long-lived client channel to another service, with the same message limits as its server.

    Every call carries the caller's trace context in its metadata (and gets a client span).
    """
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=client_interceptors())
