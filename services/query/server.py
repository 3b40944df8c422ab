"""Query service entry point and composition root: ``python -m services.query.server``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from common.consumer import EventConsumer
from common.db import create_engine, migrate, session_factory
from common.logs import configure_logging
from common.messaging import Messaging
from common.runtime import MAX_MESSAGE_BYTES, ServiceRuntime, run_main
from scribe.ingestion.v1 import ingestion_pb2_grpc
from scribe.query.v1 import query_pb2, query_pb2_grpc
from services.query.config import QuerySettings
from services.query.consumer import build_consumer
from services.query.handlers import NoteProjection, NoteReader
from services.query.models import MESSAGING
from services.query.servicer import QueryServicer

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name


@dataclass
class QueryService:
    runtime: ServiceRuntime
    projection: NoteProjection
    reader: NoteReader
    messaging: Messaging
    consumer: EventConsumer


async def build_service(settings: QuerySettings) -> QueryService:
    """Migrate the database, wire every component and start serving; returns the running service."""
    url = settings.resolved_database_url()
    await migrate(url, MIGRATIONS)
    engine = create_engine(url)
    session_maker = session_factory(engine)
    messaging = Messaging(settings, engine, session_maker, MESSAGING)
    projection = NoteProjection()
    consumer = build_consumer(messaging, projection)
    # One long-lived channel: reads of not-yet-projected notes ask ingestion on every call.
    channel = (
        grpc.aio.insecure_channel(
            settings.ingestion_addr,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        if settings.ingestion_addr
        else None
    )
    ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel) if channel is not None else None
    reader = NoteReader(settings, session_maker, ingestion, consumer)
    runtime = ServiceRuntime(
        "query", [SERVICE_NAME], host=settings.grpc_host, port=settings.grpc_port, grace_s=settings.shutdown_grace_s
    )
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(reader), runtime.server)

    await runtime.start()
    messaging.start(runtime)
    # The relay publishes what the consumer dead-letters.
    messaging.register_final_flush(runtime)
    if channel is not None:
        # Closed once the server has stopped, so that reads still in flight can finish.
        runtime.on_shutdown("ingestion channel", channel.close, phase="final")
    runtime.on_shutdown("database", engine.dispose, phase="final")
    return QueryService(runtime, projection, reader, messaging, consumer)


async def main() -> None:
    settings = QuerySettings()
    configure_logging("query", settings.log_level)
    service = await build_service(settings)
    service.runtime.install_signal_handlers()
    await service.runtime.wait()


if __name__ == "__main__":
    run_main(main)
