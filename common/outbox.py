"""Transactional outbox, its relay, and the processed-events inbox: exactly-once effects.

A service that must announce a change writes the event into ``outbox`` in the same transaction as
the change (:func:`enqueue`). :class:`OutboxRelay` publishes unsent rows in order with acks=all and
marks them sent; a crash between the two re-sends, which consumers absorb because they record every
applied event id in ``processed_events`` in the same transaction as their effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.db import UTCDateTime, is_sqlite, utcnow
from common.events import new_envelope, topic_for
from common.telemetry import context_from, current_trace_headers, tracer
from scribe.events.v1 import events_pb2 as ev

log = logging.getLogger(__name__)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    processed_events: Table


def messaging_tables(metadata: MetaData) -> MessagingTables:
    """Define the outbox and processed-events tables on a service's own metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(255), nullable=False),
        Column("message_key", String(255), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False, default=dict),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("sent_at", UTCDateTime, nullable=True),
        Index("ix_outbox_unsent", "sent_at", "id"),
    )
    processed = Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", UTCDateTime, nullable=False, default=utcnow),
    )
    return MessagingTables(outbox, processed)


def create_messaging_tables(op) -> None:
    """Alembic: create the outbox and processed_events tables (each service's first revision)."""
    tables = messaging_tables(MetaData())
    bind = op.get_bind()
    tables.outbox.create(bind)
    tables.processed_events.create(bind)


class Outbox:
    """Writes events into the outbox inside the caller's transaction and wakes the relay on commit."""

    def __init__(self, table: Table, *, topic_prefix: str, producer_name: str) -> None:
        self.table = table
        self.topic_prefix = topic_prefix
        self.producer_name = producer_name
        self._listeners: list[Callable[[], None]] = []

    def on_enqueue(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def enqueue(
        self,
        session: AsyncSession,
        payload: Message,
        *,
        tenant_id: str,
        note_id: str,
        trace_context: dict[str, str] | None = None,
    ) -> ev.EventEnvelope:
        """Write ``payload`` as an event in the caller's transaction, with the current trace context
        (or ``trace_context``) in its envelope and in the headers the relay will send."""
        if trace_context is None:
            trace_context = current_trace_headers()
        envelope = new_envelope(
            payload,
            tenant_id=tenant_id,
            note_id=note_id,
            producer=self.producer_name,
            trace_context=trace_context,
        )
        await self.enqueue_raw(
            session,
            event_id=envelope.event_id,
            topic=topic_for(type(payload), self.topic_prefix),
            key=note_id,
            value=envelope.SerializeToString(),
            headers={**trace_context, "event_type": envelope.event_type, "event_id": envelope.event_id},
        )
        return envelope

    async def enqueue_raw(
        self, session: AsyncSession, *, event_id: str, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> None:
        # The trace context travels in the row's headers: the relay sends them as the message's.
        headers = {**current_trace_headers(), **headers}
        await session.execute(
            insert(self.table).values(
                event_id=event_id, topic=topic, message_key=key, payload=value, headers=headers, created_at=utcnow()
            )
        )
        # The relay polls anyway; waking it after the caller's commit only cuts latency.
        session.sync_session.info.setdefault("after_commit", []).extend(self._listeners)


def _with_span(headers: dict[str, str], span) -> dict[str, str]:
    """The row's headers with the trace context of its publish span (the consumers' parent)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return {**headers, **carrier}


def install_commit_hooks(session_maker: async_sessionmaker[AsyncSession]) -> None:
    """Run the listeners queued by :meth:`Outbox.enqueue_raw` once the transaction commits."""
    from sqlalchemy import event

    @event.listens_for(session_maker.class_.sync_session_class, "after_commit")
    def _after_commit(session) -> None:
        for listener in session.info.pop("after_commit", []):
            listener()

    @event.listens_for(session_maker.class_.sync_session_class, "after_rollback")
    def _after_rollback(session) -> None:
        session.info.pop("after_commit", None)


class OutboxRelay:
    """Publishes outbox rows in id order (acks=all) and marks them sent; survives broker outages."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        session_maker: async_sessionmaker[AsyncSession],
        table: Table,
        producer_factory: Callable[[], AIOKafkaProducer],
        ensure_topics: Callable[[], Awaitable[object]],
        poll_s: float = 0.5,
        batch_size: int = 100,
        retention: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.session_maker = session_maker
        self.table = table
        self.producer_factory = producer_factory
        self.ensure_topics = ensure_topics
        self.poll_s = poll_s
        self.batch_size = batch_size
        self.retention = retention
        self._skip_locked = not is_sqlite(str(engine.url))
        self._wake = asyncio.Event()
        self._stopping = False
        self._producer: AIOKafkaProducer | None = None
        self._last_purge = 0.0
        self._last_ensure = 0.0
        self._task: asyncio.Task | None = None
        self.sent_total = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                await self._connect()
                sent = await self.relay_once()
                backoff = 0.2
                await self._purge()
                if sent == 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                    self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, topic gone, database busy: retry, never lose
                log.warning("outbox relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, backoff)
                await self._disconnect()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _connect(self) -> None:
        if self._producer is None:
            await self.ensure_topics()
            producer = self.producer_factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were sent."""
        assert self._producer is not None
        async with self.session_maker() as session, session.begin():
            query = select(self.table).where(self.table.c.sent_at.is_(None)).order_by(self.table.c.id)
            query = query.limit(self.batch_size)
            if self._skip_locked:
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            await self._ensure_topics_now_and_then()
            # A producer span per message, in the trace of the work that wrote the row.
            spans = [
                tracer().start_span(
                    f"publish {row.topic}",
                    context=context_from(row.headers),
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": row.topic,
                        "messaging.message.id": row.event_id,
                    },
                )
                for row in rows
            ]
            try:
                futures = [
                    await self._producer.send(
                        row.topic,
                        value=row.payload,
                        key=row.message_key.encode(),
                        headers=[(k, str(v).encode()) for k, v in _with_span(row.headers or {}, span).items()],
                    )
                    for row, span in zip(rows, spans, strict=True)
                ]
                await asyncio.gather(*futures)
            finally:
                for span in spans:
                    span.end()
            await session.execute(
                update(self.table).where(self.table.c.id.in_([r.id for r in rows])).values(sent_at=utcnow())
            )
        self.sent_total += len(rows)
        return len(rows)

    async def _ensure_topics_now_and_then(self, every_s: float = 5.0) -> None:
        """Re-create missing topics (a restarted in-memory broker has none) before it auto-creates them."""
        now = asyncio.get_running_loop().time()
        if now - self._last_ensure >= every_s:
            await self.ensure_topics()
            self._last_ensure = now

    async def backlog(self) -> tuple[int, float]:
        """Unsent rows and the age in seconds of the oldest one."""
        from sqlalchemy import func

        async with self.session_maker() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(self.table.c.created_at)).where(self.table.c.sent_at.is_(None))
                )
            ).one()
        age = 0.0
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
            age = (utcnow() - oldest).total_seconds()
        return int(count), age

    async def _purge(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_purge < 60:
            return
        self._last_purge = loop_time
        async with self.session_maker() as session, session.begin():
            await session.execute(delete(self.table).where(self.table.c.sent_at < utcnow() - self.retention))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after a last attempt to publish what is pending (what is left stays for next start)."""
        self._stopping = True
        self.wake()
        if self._task is not None:
            if self._producer is None:
                self._task.cancel()  # still connecting: nothing of ours is in flight
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        with contextlib.suppress(Exception):
            if self._producer is not None:
                while await asyncio.wait_for(self.relay_once(), timeout_s):
                    pass
        await self._disconnect()

