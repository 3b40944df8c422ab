"""Transcription service entry point and composition root: ``python -m services.transcription.server``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from common.blobstore import BlobStore, LocalBlobStore
from common.db import create_engine, migrate, session_factory
from common.logs import configure_logging
from common.messaging import Messaging
from common.runtime import ServiceRuntime, run_main
from scribe.transcription.v1 import transcription_pb2, transcription_pb2_grpc
from services.transcription.config import TranscriptionSettings
from services.transcription.consumer import build_consumer
from services.transcription.engine import EngineConfig, WhisperEngine
from services.transcription.handlers import TranscriptionHandlers
from services.transcription.model import resolve_model_dir
from services.transcription.models import MESSAGING
from services.transcription.servicer import TranscriptionServicer

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = transcription_pb2.DESCRIPTOR.services_by_name["TranscriptionService"].full_name


@dataclass
class TranscriptionService:
    runtime: ServiceRuntime
    handlers: TranscriptionHandlers
    messaging: Messaging


def load_engine(settings: TranscriptionSettings) -> WhisperEngine:
    """Assemble or locate the model folder and load it (blocking; warms the model up)."""
    model_dir = resolve_model_dir(settings.model_dir, settings.data_dir)
    engine = WhisperEngine(
        EngineConfig(
            model_dir=model_dir,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.num_workers,
            beam_size=settings.beam_size,
        )
    )
    engine.load()
    return engine


async def build_service(
    settings: TranscriptionSettings, engine: WhisperEngine | None = None, blobs: BlobStore | None = None
) -> TranscriptionService:
    url = settings.resolved_database_url()
    await migrate(url, MIGRATIONS)
    if engine is None:
        engine = await asyncio.to_thread(load_engine, settings)
    db = create_engine(url)
    session_maker = session_factory(db)
    messaging = Messaging(settings, db, session_maker, MESSAGING)
    blobs = blobs or LocalBlobStore(settings.resolved_blob_dir())
    handlers = TranscriptionHandlers(settings, session_maker, messaging.outbox, blobs, engine, url)
    recovered = await handlers.recover_orphans()
    if recovered:
        log.warning("re-queued %d job(s) left running by a previous process", recovered)
    runtime = ServiceRuntime(
        "transcription", [SERVICE_NAME], host=settings.grpc_host, port=settings.grpc_port, grace_s=settings.shutdown_grace_s
    )
    transcription_pb2_grpc.add_TranscriptionServiceServicer_to_server(
        TranscriptionServicer(handlers, blobs, settings.max_rpc_audio_bytes), runtime.server
    )
    build_consumer(messaging, handlers)
    await runtime.start()
    handlers.start_workers()
    messaging.start(runtime)
    runtime.on_shutdown("workers", handlers.stop_workers)
    messaging.register_final_flush(runtime)
    runtime.on_shutdown("database", db.dispose, phase="final")
    return TranscriptionService(runtime, handlers, messaging)


async def main() -> None:
    settings = TranscriptionSettings()
    configure_logging("transcription", settings.log_level)
    service = await build_service(settings)
    service.runtime.install_signal_handlers()
    await service.runtime.wait()


if __name__ == "__main__":
    run_main(main)
