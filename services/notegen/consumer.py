"""Note generation's event handlers: a completed transcript becomes a note; a deleted note goes."""

from __future__ import annotations

from common.messaging import Messaging
from scribe.events.v1 import events_pb2 as ev
from services.notegen.handlers import NotegenHandlers


def build_consumer(messaging: Messaging, handlers: NotegenHandlers):
    return messaging.consumer(
        {ev.TranscriptionCompleted: handlers.on_transcription_completed, ev.NoteDeleted: handlers.on_note_deleted}
    )
