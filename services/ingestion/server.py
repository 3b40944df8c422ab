"""Ingestion service entry point and composition root: ``python -m services.ingestion.server``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from common.blobstore import BlobStore, LocalBlobStore
from common.db import create_engine, migrate, session_factory
from common.logs import configure_logging
from common.messaging import Messaging
from common.runtime import ServiceRuntime, run_main
from scribe.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from services.ingestion.config import IngestionSettings
from services.ingestion.consumer import build_consumer
from services.ingestion.handlers import IngestionHandlers
from services.ingestion.models import MESSAGING
from services.ingestion.servicer import IngestionServicer

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name


@dataclass
class IngestionService:
    runtime: ServiceRuntime
    handlers: IngestionHandlers
    messaging: Messaging


async def build_service(settings: IngestionSettings, blobs: BlobStore | None = None) -> IngestionService:
    """Migrate the database, wire every component and start serving; returns the running service."""
    url = settings.resolved_database_url()
    await migrate(url, MIGRATIONS)
    engine = create_engine(url)
    session_maker = session_factory(engine)
    messaging = Messaging(settings, engine, session_maker, MESSAGING)
    handlers = IngestionHandlers(settings, session_maker, messaging.outbox, blobs or LocalBlobStore(settings.resolved_blob_dir()))
    runtime = ServiceRuntime(
        "ingestion", [SERVICE_NAME], host=settings.grpc_host, port=settings.grpc_port, grace_s=settings.shutdown_grace_s
    )
    ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(IngestionServicer(handlers), runtime.server)
    build_consumer(messaging, handlers)

    stopping = asyncio.Event()
    redrive = asyncio.create_task(handlers.run_redrive(stopping), name="redrive")

    async def stop_redrive() -> None:
        stopping.set()
        await redrive

    runtime.on_shutdown("re-drive", stop_redrive)
    await runtime.start()
    messaging.start(runtime)
    messaging.register_final_flush(runtime)
    runtime.on_shutdown("database", engine.dispose, phase="final")
    return IngestionService(runtime, handlers, messaging)


async def main() -> None:
    settings = IngestionSettings()
    configure_logging("ingestion", settings.log_level)
    service = await build_service(settings)
    service.runtime.install_signal_handlers()
    await service.runtime.wait()


if __name__ == "__main__":
    run_main(main)
