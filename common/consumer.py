"""Idempotent Kafka consumers: each event's effect and its processed-event record commit together.

:class:`EventConsumer` reads its topics in one consumer group (replicas share the partitions),
hands each decoded event to the handler registered for its type inside a database transaction that
also records the event id, and commits the offset after the transaction. A redelivered event finds
its id recorded and is skipped. A handler that keeps failing, or a message that cannot be decoded,
goes to the dead-letter topic (through the outbox) so it never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from google.protobuf.message import Message
from opentelemetry.trace import SpanKind
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import utcnow
from common.events import DecodedEvent, UndecodableEvent, dead_letter_topic, decode
from common.logs import log_context
from common.outbox import Outbox
from common.telemetry import SERVICE_ATTRIBUTE, context_from, tracer

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, DecodedEvent], Awaitable[None]]


class PermanentError(Exception):
    """A handler error that retrying cannot fix: the event goes straight to the dead letters."""


class EventConsumer:
    """One consumer group over several topics, applying each event exactly once."""

    def __init__(
        self,
        *,
        name: str,
        consumer_factory: Callable[[list[str]], AIOKafkaConsumer],
        topics: list[str],
        handlers: dict[type[Message], Handler],
        session_maker: async_sessionmaker[AsyncSession],
        processed_table: Table,
        outbox: Outbox,
        topic_prefix: str,
        ensure_topics: Callable[[], Awaitable[object]],
        max_attempts: int = 5,
        max_records: int = 50,
        wait_for_capacity: Callable[[], Awaitable[None]] | None = None,
        service: str = "",
    ) -> None:
        self.name = name
        self.service = service or name
        self.consumer_factory = consumer_factory
        self.topics = topics
        self.handlers = handlers
        self.session_maker = session_maker
        self.processed = processed_table
        self.outbox = outbox
        self.topic_prefix = topic_prefix
        self.ensure_topics = ensure_topics
        self.max_attempts = max_attempts
        self.max_records = max_records
        self.wait_for_capacity = wait_for_capacity
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = False
        self._task: asyncio.Task | None = None
        # True while an event is being applied: shutdown waits for it instead of cancelling.
        self._busy = False
        # Offsets this consumer committed, to notice a broker that lost them (tansu's memory engine).
        self._committed: dict[TopicPartition, int] = {}
        self._last_offset_check = 0.0
        self.applied_total = 0
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"consumer-{self.name}")

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                if self._consumer is None:
                    await self.ensure_topics()
                    consumer = self.consumer_factory(self.topics)
                    try:
                        await consumer.start()
                    except BaseException:
                        await consumer.stop()
                        raise
                    self._consumer = consumer
                    self.connected.set()
                await self._poll_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away or database busy: back off and go on
                log.warning("consumer %s: %s: %s; retrying in %.1fs", self.name, type(exc).__name__, exc, backoff)
                await self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        if self.wait_for_capacity is not None:
            await self.wait_for_capacity()
            if self._stopping:
                return
        await self._check_offsets_survived()
        batch = await self._consumer.getmany(timeout_ms=500, max_records=self.max_records)
        for tp, records in batch.items():
            for record in records:
                if self._stopping:
                    return
                self._busy = True
                try:
                    await self._apply(record)
                    with contextlib.suppress(CommitFailedError):
                        await self._consumer.commit({tp: record.offset + 1})
                        self._committed[tp] = record.offset + 1
                finally:
                    self._busy = False

    async def _check_offsets_survived(self, every_s: float = 3.0) -> None:
        """Replay a partition from its start when the broker forgot our commits or its messages.

        A restarted in-memory broker starts every topic at offset 0 again; left alone, this consumer
        would skip new messages until they pass its old position. Replaying is safe: applied events
        are recorded, so they are skipped.
        """
        now = asyncio.get_running_loop().time()
        if now - self._last_offset_check < every_s or self._consumer is None:
            return
        self._last_offset_check = now
        consumer = self._consumer
        for tp in list(consumer.assignment()):
            ours = self._committed.get(tp)
            if ours is None:
                continue
            committed = await consumer.committed(tp)
            highwater = consumer.highwater(tp)
            if committed is None or committed < ours or (highwater is not None and highwater < ours):
                log.warning("consumer %s: broker lost offsets of %s; replaying it", self.name, tp)
                consumer.seek_to_beginning(tp)
                self._committed.pop(tp, None)

    async def _apply(self, record: ConsumerRecord) -> None:
        """Apply one record inside a consumer span continuing the trace of the work that emitted it."""
        headers = {key: value.decode(errors="replace") for key, value in record.headers or () if value is not None}
        try:
            event: DecodedEvent | None = decode(record.value)
        except UndecodableEvent as exc:
            event, undecodable = None, exc
        if event is not None and "traceparent" not in headers:
            headers = dict(event.envelope.trace_context)  # written by a producer that only filled the envelope
        attributes = {
            SERVICE_ATTRIBUTE: self.service,
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.consumer.group.name": self.name,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        if event is not None:
            attributes["messaging.message.id"] = event.envelope.event_id
            attributes["scribe.event_type"] = event.event_type
            attributes["scribe.note_id"] = event.envelope.note_id
        with tracer().start_as_current_span(
            f"process {record.topic}", context=context_from(headers), kind=SpanKind.CONSUMER, attributes=attributes
        ):
            if event is None:
                await self._dead_letter(record, f"undecodable: {undecodable}", event_id=None)
                return
            await self._handle(record, event)

    async def _handle(self, record: ConsumerRecord, event: DecodedEvent) -> None:
        handler = self.handlers.get(type(event.payload))
        envelope = event.envelope
        with log_context(note_id=envelope.note_id, tenant_id=envelope.tenant_id, event_id=envelope.event_id):
            if handler is None:
                return
            attempt = 0
            while True:
                attempt += 1
                try:
                    applied = await self._apply_once(event, handler)
                    if applied:
                        self.applied_total += 1
                    return
                except asyncio.CancelledError:
                    raise
                except PermanentError as exc:
                    await self._dead_letter(record, f"{type(exc).__name__}: {exc}", envelope.event_id)
                    return
                except Exception as exc:
                    if attempt >= self.max_attempts:
                        log.exception("consumer %s: giving up on %s", self.name, envelope.event_type)
                        await self._dead_letter(record, f"{type(exc).__name__}: {exc}", envelope.event_id)
                        return
                    delay = min(0.2 * 2**attempt, 10.0)
                    log.warning("consumer %s: %s failed (%s), attempt %d", self.name, envelope.event_type, exc, attempt)
                    await asyncio.sleep(delay)

    async def _apply_once(self, event: DecodedEvent, handler: Handler) -> bool:
        event_id = event.envelope.event_id
        try:
            async with self.session_maker() as session, session.begin():
                seen = await session.scalar(
                    select(self.processed.c.event_id).where(
                        self.processed.c.consumer == self.name, self.processed.c.event_id == event_id
                    )
                )
                if seen is not None:
                    return False
                await handler(session, event)
                await session.execute(
                    insert(self.processed).values(consumer=self.name, event_id=event_id, processed_at=utcnow())
                )
        except IntegrityError:
            # Another replica applied the same event concurrently; its transaction won.
            async with self.session_maker() as session:
                seen = await session.scalar(
                    select(self.processed.c.event_id).where(
                        self.processed.c.consumer == self.name, self.processed.c.event_id == event_id
                    )
                )
            if seen is None:
                raise
            return False
        return True

    async def _dead_letter(self, record: ConsumerRecord, reason: str, event_id: str | None) -> None:
        log.error("consumer %s: dead-lettering a message from %s: %s", self.name, record.topic, reason[:300])
        dlq_id = f"dlq:{self.name}:{record.topic}:{record.partition}:{record.offset}"[:36]
        async with self.session_maker() as session, session.begin():
            with contextlib.suppress(IntegrityError):
                async with session.begin_nested():
                    await self.outbox.enqueue_raw(
                        session,
                        event_id=event_id and f"dl-{event_id}"[:36] or dlq_id,
                        topic=dead_letter_topic(self.topic_prefix),
                        key=(record.key or b"").decode(errors="replace"),
                        value=record.value or b"",
                        headers={"source_topic": record.topic, "consumer": self.name, "reason": reason[:500]},
                    )
                    if event_id:
                        await session.execute(
                            insert(self.processed).values(consumer=self.name, event_id=event_id, processed_at=utcnow())
                        )

    async def lag_by_partition(self) -> dict[TopicPartition, int]:
        """Messages published but not yet consumed per assigned partition (high-water mark - position)."""
        consumer = self._consumer
        result: dict[TopicPartition, int] = {}
        if consumer is None:
            return result
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except Exception:
                continue
            result[tp] = max(0, highwater - position)
        return result

    async def lag(self) -> int:
        return sum((await self.lag_by_partition()).values())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the message in hand, commit, leave the group."""
        self._stopping = True
        if self._task is not None:
            if not self._busy:
                self._task.cancel()
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        await self._close()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._committed.clear()
        self.connected.clear()
        if consumer is not None:
            with contextlib.suppress(KafkaError, Exception):
                await asyncio.wait_for(consumer.stop(), 10)
