"""What every service's composition root does the same way: database, messaging, runtime, main().

A service's ``build_service`` opens a :class:`ServiceCore` (migrated database, session maker,
outbox + consumers, gRPC runtime), registers its own servicer, consumers and background work, then
calls :meth:`ServiceCore.start`. ``serve`` is the body of every ``main()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.db import create_engine, migrate, session_factory
from common.logs import configure_logging
from common.messaging import Messaging
from common.outbox import MessagingTables
from common.runtime import ServiceRuntime, run_main
from common.settings import ServiceSettings
from common.telemetry import GaugeSource, register_gauges, setup_tracing, start_metrics_server


@dataclass
class ServiceCore:
    """A service's migrated database, its messaging and its gRPC runtime, not yet started."""

    database_url: str
    engine: AsyncEngine
    session_maker: async_sessionmaker[AsyncSession]
    messaging: Messaging
    runtime: ServiceRuntime

    @classmethod
    async def open(
        cls,
        settings: ServiceSettings,
        *,
        grpc_service: str,
        migrations: Path,
        tables: MessagingTables,
    ) -> ServiceCore:
        """Migrate the service's database to head and build (not start) its components."""
        url = settings.resolved_database_url()
        await migrate(url, migrations)
        engine = create_engine(url)
        session_maker = session_factory(engine)
        runtime = ServiceRuntime(
            settings.service_name,
            [grpc_service],
            host=settings.grpc_host,
            port=settings.grpc_port,
            grace_s=settings.shutdown_grace_s,
        )
        return cls(url, engine, session_maker, Messaging(settings, engine, session_maker, tables), runtime)

    def add_gauges(self, source: GaugeSource) -> None:
        """Have ``source`` read at every scrape of /metrics, until the service shuts down."""
        unregister = register_gauges(self.runtime.name, source)

        async def stop() -> None:
            unregister()

        self.runtime.on_shutdown("metrics", stop, phase="final")

    async def start(self) -> None:
        """Serve gRPC and start relay and consumers; at shutdown, flush the outbox and close the database."""
        await self.runtime.start()
        self.add_gauges(self.messaging.gauges)
        self.messaging.start(self.runtime)
        self.messaging.register_final_flush(self.runtime)
        self.runtime.on_shutdown("database", self.engine.dispose, phase="final")


class _Running(Protocol):
    runtime: ServiceRuntime


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def serve(make_settings: Callable[[], SettingsT], build: Callable[[SettingsT], Awaitable[_Running]]) -> None:
    """A service process: settings from the environment, JSON logs, metrics and traces, run until
    SIGTERM, exit 0."""

    async def main() -> None:
        settings = make_settings()
        configure_logging(settings.service_name, settings.log_level)
        stop_tracing = setup_tracing(settings.service_name, settings.otlp_endpoint)
        stop_metrics = start_metrics_server(settings.metrics_port, settings.metrics_host)
        try:
            service = await build(settings)
            service.runtime.install_signal_handlers()
            await service.runtime.wait()
        finally:
            if stop_metrics is not None:
                stop_metrics()
            stop_tracing()

    run_main(main)
