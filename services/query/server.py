"""Query service entry point and composition root: ``python -m services.query.server``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.consumer import EventConsumer
from common.messaging import Messaging
from common.runtime import ServiceRuntime, open_channel
from common.service import ServiceCore, serve
from scribe.ingestion.v1 import ingestion_pb2_grpc
from scribe.query.v1 import query_pb2, query_pb2_grpc
from services.query.config import QuerySettings
from services.query.consumer import build_consumer
from services.query.handlers import NoteProjection, NoteReader
from services.query.models import MESSAGING
from services.query.servicer import QueryServicer
from services.query.webhooks import WebhookAdmin, WebhookDeliverer

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name


@dataclass
class QueryService:
    runtime: ServiceRuntime
    projection: NoteProjection
    reader: NoteReader
    messaging: Messaging
    consumer: EventConsumer
    deliverer: WebhookDeliverer


async def build_service(settings: QuerySettings) -> QueryService:
    """Migrate the database, wire every component and start serving; returns the running service."""
    core = await ServiceCore.open(settings, grpc_service=SERVICE_NAME, migrations=MIGRATIONS, tables=MESSAGING)
    projection = NoteProjection(settings)
    consumer = build_consumer(core.messaging, projection)
    # One long-lived channel: reads of not-yet-projected notes ask ingestion on every call.
    channel = open_channel(settings.ingestion_addr) if settings.ingestion_addr else None
    ingestion = ingestion_pb2_grpc.IngestionServiceStub(channel) if channel is not None else None
    reader = NoteReader(settings, core.session_maker, ingestion, consumer)
    admin = WebhookAdmin(settings, core.session_maker)
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(reader, admin), core.runtime.server)
    await core.start()
    core.add_gauges(reader.gauges)
    # Webhook calls run beside the pipeline, never in the consumer's path.
    deliverer = WebhookDeliverer(settings, core.session_maker)
    deliverer.start()
    core.runtime.on_shutdown("webhook deliverer", deliverer.stop)
    if channel is not None:
        # Closed once the server has stopped, so that reads still in flight can finish.
        core.runtime.on_shutdown("ingestion channel", channel.close, phase="final")
    return QueryService(core.runtime, projection, reader, core.messaging, consumer, deliverer)


def main() -> None:
    serve(QuerySettings, build_service)


if __name__ == "__main__":
    main()
