"""Publish and read events on the real broker the way the services do, for tests."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import Message

from common.events import DecodedEvent, decode, new_envelope, topic_for
from scribe.events.v1 import events_pb2 as ev


async def publish(broker: str, prefix: str, payload: Message, *, tenant_id: str, note_id: str,
                  envelope: ev.EventEnvelope | None = None) -> ev.EventEnvelope:
    """Send one event (a new envelope, or ``envelope`` again to simulate a redelivery)."""
    envelope = envelope or new_envelope(payload, tenant_id=tenant_id, note_id=note_id, producer="test")
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(topic_for(type(payload), prefix), envelope.SerializeToString(),
                                     key=note_id.encode())
    finally:
        await producer.stop()
    return envelope


async def collect(broker: str, prefix: str, event_cls: type[Message], *, at_least: int,
                  timeout_s: float = 60.0) -> list[DecodedEvent]:
    """Read the event's topic from the start until ``at_least`` events are seen (or time runs out)."""
    consumer = AIOKafkaConsumer(topic_for(event_cls, prefix), bootstrap_servers=broker, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: list[DecodedEvent] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < at_least and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(decode(r.value) for r in records)
        return found
    finally:
        await consumer.stop()
