"""Query's event handlers: every event of a note's life feeds the one projection."""

from __future__ import annotations

from common.consumer import EventConsumer
from common.messaging import Messaging
from services.query.handlers import PROJECTED_EVENTS, NoteProjection


def build_consumer(messaging: Messaging, projection: NoteProjection) -> EventConsumer:
    """One consumer group ("query") over the topics of every event the read model shows."""
    return messaging.consumer({event: projection.apply for event in PROJECTED_EVENTS})
