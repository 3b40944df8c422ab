"""Transcription's event handlers: a new or re-driven run becomes a job when a worker is free; a
deleted note's jobs go at once, in a consumer group of their own that never waits for a worker."""

from __future__ import annotations

from common.messaging import Messaging
from scribe.events.v1 import events_pb2 as ev
from services.transcription.handlers import TranscriptionHandlers


def build_consumer(messaging: Messaging, handlers: TranscriptionHandlers):
    messaging.consumer(
        {ev.NoteDeleted: handlers.on_note_deleted}, group=f"{messaging.settings.service_name}-deletions"
    )
    return messaging.consumer(
        # A retry's TranscriptionRequested carries the same facts as AudioIngested.
        {ev.AudioIngested: handlers.on_audio_ingested, ev.TranscriptionRequested: handlers.on_audio_ingested},
        max_records=1,
        wait_for_capacity=handlers.wait_for_capacity,
    )
