"""Query's event handlers: every event of a note's life feeds the one projection."""

from __future__ import annotations

from common.consumer import EventConsumer
from common.messaging import Messaging
from scribe.events.v1 import events_pb2 as ev
from services.query.handlers import PROJECTED_EVENTS, NoteProjection


def build_consumer(messaging: Messaging, projection: NoteProjection) -> EventConsumer:
    """One consumer group ("query") over the topics of every event the read model shows, and of
    the Smart Feedback follow-ups it sends webhooks for."""
    handlers = {event: projection.apply for event in PROJECTED_EVENTS}
    handlers[ev.FollowUpWritten] = projection.follow_up_written
    return messaging.consumer(handlers)
