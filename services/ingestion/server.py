"""Ingestion service entry point and composition root: ``python -m services.ingestion.server``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from common.blobstore import BlobStore, open_blob_store
from common.messaging import Messaging
from common.runtime import ServiceRuntime
from common.service import ServiceCore, serve
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
    core = await ServiceCore.open(settings, grpc_service=SERVICE_NAME, migrations=MIGRATIONS, tables=MESSAGING)
    handlers = IngestionHandlers(settings, core.session_maker, core.messaging.outbox, blobs or open_blob_store(settings))
    ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(IngestionServicer(handlers), core.runtime.server)
    build_consumer(core.messaging, handlers)

    stopping = asyncio.Event()
    redrive = asyncio.create_task(handlers.run_redrive(stopping), name="redrive")

    async def stop_redrive() -> None:
        stopping.set()
        await redrive

    core.runtime.on_shutdown("re-drive", stop_redrive)
    await core.start()
    return IngestionService(core.runtime, handlers, core.messaging)


def main() -> None:
    serve(IngestionSettings, build_service)


if __name__ == "__main__":
    main()
