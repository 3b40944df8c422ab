"""Transcription service entry point and composition root: ``python -m services.transcription.server``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from common.blobstore import BlobStore, LocalBlobStore
from common.messaging import Messaging
from common.runtime import ServiceRuntime
from common.service import ServiceCore, serve
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
    """Migrate the database, load the model, wire every component and start serving."""
    core = await ServiceCore.open(settings, grpc_service=SERVICE_NAME, migrations=MIGRATIONS, tables=MESSAGING)
    if engine is None:
        engine = await asyncio.to_thread(load_engine, settings)
    blobs = blobs or LocalBlobStore(settings.resolved_blob_dir())
    handlers = TranscriptionHandlers(
        settings, core.session_maker, core.messaging.outbox, blobs, engine, core.database_url
    )
    recovered = await handlers.recover_orphans()
    if recovered:
        log.warning("re-queued %d job(s) left running by a previous process", recovered)
    transcription_pb2_grpc.add_TranscriptionServiceServicer_to_server(
        TranscriptionServicer(handlers, blobs, settings.max_rpc_audio_bytes), core.runtime.server
    )
    build_consumer(core.messaging, handlers)
    await core.start()
    handlers.start_workers()
    # After the consumers' drain step: no new job is queued while the workers hand theirs back.
    core.runtime.on_shutdown("workers", handlers.stop_workers)
    return TranscriptionService(core.runtime, handlers, core.messaging)


def main() -> None:
    serve(TranscriptionSettings, build_service)


if __name__ == "__main__":
    main()
