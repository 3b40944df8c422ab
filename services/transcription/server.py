"""Transcription service entry point and composition root: ``python -m services.transcription.server``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.blobstore import BlobStore, open_blob_store
from common.messaging import Messaging
from common.runtime import ServiceRuntime
from common.service import ServiceCore, serve
from scribe.transcription.v1 import transcription_pb2, transcription_pb2_grpc
from services.transcription.config import TranscriptionSettings
from services.transcription.consumer import build_consumer
from services.transcription.diarization import Diarizer, load_encoder
from services.transcription.engine import WhisperEngine
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
    engine = WhisperEngine(settings.engine_config(resolve_model_dir(settings.model_dir, settings.data_dir)))
    engine.load()
    return engine


def diarizer_factory(settings: TranscriptionSettings) -> Callable[[], Diarizer] | None:
    """A new Diarizer per transcription, all sharing one voice encoder loaded here (blocking);
    None when diarization is off. Missing or corrupt encoder weights stop the start-up."""
    if not settings.diarization:
        return None
    weights_dir = settings.resolved_diarization_weights_dir()
    encoder = load_encoder(weights_dir)
    return lambda: Diarizer(
        weights_dir, encoder=encoder, threshold=settings.diarization_threshold, max_speakers=settings.max_speakers
    )


async def build_service(
    settings: TranscriptionSettings, engine: WhisperEngine | None = None, blobs: BlobStore | None = None
) -> TranscriptionService:
    """Migrate the database, load the model, wire every component and start serving."""
    core = await ServiceCore.open(settings, grpc_service=SERVICE_NAME, migrations=MIGRATIONS, tables=MESSAGING)
    if engine is None:
        engine = await asyncio.to_thread(load_engine, settings)
    diarizers = await asyncio.to_thread(diarizer_factory, settings)
    blobs = blobs or open_blob_store(settings)
    handlers = TranscriptionHandlers(
        settings, core.session_maker, core.messaging.outbox, blobs, engine, core.database_url, diarizers
    )
    recovered = await handlers.recover_orphans()
    if recovered:
        log.warning("re-queued %d job(s) left running by a previous process", recovered)
    transcription_pb2_grpc.add_TranscriptionServiceServicer_to_server(
        TranscriptionServicer(handlers, blobs, settings.max_rpc_audio_bytes), core.runtime.server
    )
    build_consumer(core.messaging, handlers)
    await core.start()
    core.add_gauges(handlers.gauges)
    handlers.start_workers()
    # After the consumers' drain step: no new job is queued while the workers hand theirs back.
    core.runtime.on_shutdown("workers", handlers.stop_workers)
    return TranscriptionService(core.runtime, handlers, core.messaging)


def main() -> None:
    serve(TranscriptionSettings, build_service)


if __name__ == "__main__":
    main()
