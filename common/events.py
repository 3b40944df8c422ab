"""Event envelopes and topics: how a protobuf event becomes a Kafka message and back.

One topic per event type, named ``<prefix>.<area>.<event>`` (``scribe.audio.ingested``); the key is
the note id so that one note's events stay in order; the value is a serialized ``EventEnvelope``
whose ``payload`` is the event message packed in an ``Any``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from scribe.events.v1 import events_pb2 as ev

# Event message -> topic suffix. Adding an event means adding a line here.
TOPIC_SUFFIXES: dict[type[Message], str] = {
    ev.AudioIngested: "audio.ingested",
    ev.TranscriptionRequested: "transcription.requested",
    ev.TranscriptionStarted: "transcription.started",
    ev.TranscriptionProgress: "transcription.progress",
    ev.TranscriptionCompleted: "transcription.completed",
    ev.TranscriptionFailed: "transcription.failed",
    ev.NoteGenerated: "note.generated",
    ev.NoteGenerationFailed: "note.failed",
    ev.NoteSectionUpdated: "note.section_updated",
    ev.FollowUpWritten: "follow_up.written",
    ev.NoteDeleted: "note.deleted",
}
DEAD_LETTER_SUFFIX = "dead_letter"
EVENT_TYPES: dict[str, type[Message]] = {cls.DESCRIPTOR.full_name: cls for cls in TOPIC_SUFFIXES}


def topic_for(event_cls: type[Message], prefix: str) -> str:
    return f"{prefix}.{TOPIC_SUFFIXES[event_cls]}"


def dead_letter_topic(prefix: str) -> str:
    return f"{prefix}.{DEAD_LETTER_SUFFIX}"


def all_topics(prefix: str) -> list[str]:
    return [topic_for(cls, prefix) for cls in TOPIC_SUFFIXES] + [dead_letter_topic(prefix)]


def timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def from_timestamp(ts: Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


def new_envelope(
    payload: Message,
    *,
    tenant_id: str,
    note_id: str,
    producer: str,
    trace_context: dict[str, str] | None = None,
) -> ev.EventEnvelope:
    envelope = ev.EventEnvelope(
        event_id=str(uuid.uuid4()),
        event_type=payload.DESCRIPTOR.full_name,
        occurred_at=timestamp(dt.datetime.now(dt.UTC)),
        tenant_id=tenant_id,
        note_id=note_id,
        producer=producer,
    )
    envelope.trace_context.update(trace_context or {})
    envelope.payload.Pack(payload)
    return envelope


class UndecodableEvent(ValueError):
    """A message that is not an envelope of a known event: a poison message for the dead letters."""


@dataclass(frozen=True)
class DecodedEvent:
    envelope: ev.EventEnvelope
    payload: Message

    @property
    def event_type(self) -> str:
        return self.envelope.event_type


def decode(value: bytes) -> DecodedEvent:
    envelope = ev.EventEnvelope()
    try:
        envelope.ParseFromString(value)
    except DecodeError as exc:
        raise UndecodableEvent(f"not an EventEnvelope: {exc}") from exc
    cls = EVENT_TYPES.get(envelope.event_type)
    if cls is None:
        raise UndecodableEvent(f"unknown event type {envelope.event_type!r}")
    payload = cls()
    if not envelope.payload.Unpack(payload):
        raise UndecodableEvent(f"payload is not a {envelope.event_type}")
    if not envelope.event_id or not envelope.note_id:
        raise UndecodableEvent("envelope without event_id or note_id")
    return DecodedEvent(envelope, payload)
