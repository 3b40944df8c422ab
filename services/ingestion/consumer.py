"""Ingestion's event handlers: when its notes' runs start processing and how they end."""

from __future__ import annotations

from common.messaging import Messaging
from scribe.events.v1 import events_pb2 as ev
from services.ingestion.handlers import IngestionHandlers


def build_consumer(messaging: Messaging, handlers: IngestionHandlers):
    return messaging.consumer(
        {
            ev.TranscriptionStarted: handlers.on_transcription_started,
            ev.NoteGenerated: handlers.on_run_finished,
            ev.NoteGenerationFailed: handlers.on_run_finished,
            ev.TranscriptionFailed: handlers.on_run_finished,
            # Ends the run of a transcription-only request (seed 002); ignored for notes.
            ev.TranscriptionCompleted: handlers.on_run_finished,
        }
    )
