"""Note generation service entry point and composition root: ``python -m services.notegen.server``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.db import create_engine, migrate, session_factory
from common.logs import configure_logging
from common.messaging import Messaging
from common.runtime import ServiceRuntime, run_main
from scribe.notegen.v1 import notegen_pb2, notegen_pb2_grpc
from services.notegen.config import NotegenSettings
from services.notegen.consumer import build_consumer
from services.notegen.handlers import NotegenHandlers
from services.notegen.models import MESSAGING
from services.notegen.servicer import NotegenServicer

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = notegen_pb2.DESCRIPTOR.services_by_name["NoteGenService"].full_name


@dataclass
class NotegenService:
    runtime: ServiceRuntime
    handlers: NotegenHandlers
    messaging: Messaging


async def build_service(settings: NotegenSettings) -> NotegenService:
    url = settings.resolved_database_url()
    await migrate(url, MIGRATIONS)
    engine = create_engine(url)
    session_maker = session_factory(engine)
    messaging = Messaging(settings, engine, session_maker, MESSAGING)
    handlers = NotegenHandlers(settings, session_maker, messaging.outbox)
    runtime = ServiceRuntime(
        "notegen", [SERVICE_NAME], host=settings.grpc_host, port=settings.grpc_port, grace_s=settings.shutdown_grace_s
    )
    notegen_pb2_grpc.add_NoteGenServiceServicer_to_server(NotegenServicer(handlers), runtime.server)
    build_consumer(messaging, handlers)
    await runtime.start()
    messaging.start(runtime)
    messaging.register_final_flush(runtime)
    runtime.on_shutdown("database", engine.dispose, phase="final")
    return NotegenService(runtime, handlers, messaging)


async def main() -> None:
    settings = NotegenSettings()
    configure_logging("notegen", settings.log_level)
    service = await build_service(settings)
    service.runtime.install_signal_handlers()
    await service.runtime.wait()


if __name__ == "__main__":
    run_main(main)
