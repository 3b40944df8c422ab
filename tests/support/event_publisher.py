"""Publishing events in tests the way services do, and waiting until a consumer group has read them.

:class:`EventPublisher` writes envelopes (``common.events.new_envelope``) to the event's topic keyed
by note id, as the outbox relay does, over one long-lived producer; it can send an envelope again
unchanged (a redelivery) or with a new event id (a re-drive). :func:`wait_consumed` waits until a
consumer group has committed past given records, so a test can assert that something did NOT
change after an event.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata, TopicPartition
from google.protobuf.message import Message

from common.events import EVENT_TYPES, decode, new_envelope, timestamp, topic_for
from scribe.events.v1 import events_pb2 as ev


class EventPublisher:
    """An acks=all producer of event envelopes on one topic prefix."""

    def __init__(self, bootstrap: str, topic_prefix: str, producer_name: str = "tests") -> None:
        self.topic_prefix = topic_prefix
        self.producer_name = producer_name
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(
        self, payload: Message, *, tenant_id: str, note_id: str, occurred_at: dt.datetime | None = None
    ) -> tuple[ev.EventEnvelope, RecordMetadata]:
        """Publish a new event; returns its envelope and where it landed."""
        envelope = new_envelope(payload, tenant_id=tenant_id, note_id=note_id, producer=self.producer_name)
        if occurred_at is not None:
            envelope.occurred_at.CopyFrom(timestamp(occurred_at))
        return envelope, await self.send(envelope)

    async def send(self, envelope: ev.EventEnvelope) -> RecordMetadata:
        """Send an envelope as is: sending one twice is a redelivery (same event id)."""
        topic = topic_for(EVENT_TYPES[envelope.event_type], self.topic_prefix)
        return await self._producer.send_and_wait(topic, envelope.SerializeToString(), key=envelope.note_id.encode())

    async def redrive(self, envelope: ev.EventEnvelope) -> tuple[ev.EventEnvelope, RecordMetadata]:
        """Publish the same payload again under a new event id, as ingestion's re-drive does."""
        payload = decode(envelope.SerializeToString()).payload
        redriven = new_envelope(
            payload, tenant_id=envelope.tenant_id, note_id=envelope.note_id, producer=envelope.producer
        )
        return redriven, await self.send(redriven)


async def wait_consumed(bootstrap: str, group: str, records: list[RecordMetadata], timeout_s: float = 10.0) -> None:
    """Wait until ``group`` has committed an offset past every one of ``records``."""
    wanted: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        wanted[tp] = max(wanted.get(tp, 0), record.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=list(wanted))
            behind = {
                tp: offset for tp, offset in wanted.items() if tp not in committed or committed[tp].offset < offset
            }
            if not behind:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"group {group} has not consumed {behind} after {timeout_s}s")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
