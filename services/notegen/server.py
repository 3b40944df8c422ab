"""Note generation service entry point and composition root: ``python -m services.notegen.server``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.messaging import Messaging
from common.runtime import ServiceRuntime
from common.service import ServiceCore, serve
from scribe.notegen.v1 import notegen_pb2, notegen_pb2_grpc
from services.notegen.config import NotegenSettings
from services.notegen.consumer import build_consumer
from services.notegen.followups import FollowUps
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
    follow_ups: FollowUps


async def build_service(settings: NotegenSettings) -> NotegenService:
    """Migrate the database, wire every component and start serving; returns the running service."""
    core = await ServiceCore.open(settings, grpc_service=SERVICE_NAME, migrations=MIGRATIONS, tables=MESSAGING)
    handlers = NotegenHandlers(settings, core.session_maker, core.messaging.outbox)
    follow_ups = FollowUps(core.session_maker, core.messaging.outbox, llm=handlers.llm)
    notegen_pb2_grpc.add_NoteGenServiceServicer_to_server(NotegenServicer(handlers, follow_ups), core.runtime.server)
    build_consumer(core.messaging, handlers)
    core.runtime.on_shutdown("llm client", handlers.close, phase="final")
    await core.start()
    # Smart Feedback's writer runs beside the consumer (seed 003).
    follow_ups.start()
    core.runtime.on_shutdown("follow-up writer", follow_ups.stop)
    return NotegenService(core.runtime, handlers, core.messaging, follow_ups)


def main() -> None:
    serve(NotegenSettings, build_service)


if __name__ == "__main__":
    main()
