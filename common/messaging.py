"""Wires a service's outbox, relay and consumers from its settings: one place, every service.

``Messaging`` is built by a service's composition root, started after its database is migrated,
and drained on shutdown: consumers first (finish the event in hand, commit), then the relay (last
flush of the outbox), so nothing the service did is left unpublished.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.consumer import EventConsumer, Handler
from common.events import all_topics, topic_for
from common.kafka import ensure_topics, make_consumer, make_producer
from common.outbox import MessagingTables, Outbox, OutboxRelay, install_commit_hooks
from common.runtime import ServiceRuntime
from common.settings import ServiceSettings
from common.telemetry import Sample


class Messaging:
    """The Kafka side of one service."""

    def __init__(
        self,
        settings: ServiceSettings,
        engine: AsyncEngine,
        session_maker: async_sessionmaker[AsyncSession],
        tables: MessagingTables,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.tables = tables
        self.outbox = Outbox(tables.outbox, topic_prefix=settings.topic_prefix, producer_name=settings.service_name)
        install_commit_hooks(session_maker)
        self.relay = OutboxRelay(
            engine=engine,
            session_maker=session_maker,
            table=tables.outbox,
            producer_factory=self._producer,
            ensure_topics=self.ensure_topics,
            poll_s=settings.outbox_poll_s,
        )
        self.outbox.on_enqueue(self.relay.wake)
        self.consumers: list[EventConsumer] = []

    def _producer(self) -> AIOKafkaProducer:
        s = self.settings
        return make_producer(s.kafka_bootstrap, f"{s.service_name}-relay", s.max_event_bytes + 64 * 1024)

    async def ensure_topics(self) -> None:
        s = self.settings
        await ensure_topics(s.kafka_bootstrap, all_topics(s.topic_prefix), s.topic_partitions)

    def consumer(
        self,
        handlers: dict[type[Message], Handler],
        *,
        group: str | None = None,
        max_records: int = 50,
        wait_for_capacity=None,
        max_poll_interval_ms: int = 300000,
    ) -> EventConsumer:
        """A consumer group (default: the service's name) for the given event handlers."""
        s = self.settings
        name = group or s.service_name

        def factory(topics: list[str]) -> AIOKafkaConsumer:
            return make_consumer(
                s.kafka_bootstrap, name, topics, s.max_event_bytes + 64 * 1024, max_poll_interval_ms
            )

        consumer = EventConsumer(
            name=name,
            consumer_factory=factory,
            topics=[topic_for(cls, s.topic_prefix) for cls in handlers],
            handlers=handlers,
            session_maker=self.session_maker,
            processed_table=self.tables.processed_events,
            outbox=self.outbox,
            topic_prefix=s.topic_prefix,
            ensure_topics=self.ensure_topics,
            max_records=max_records,
            wait_for_capacity=wait_for_capacity,
            service=s.service_name,
        )
        self.consumers.append(consumer)
        return consumer

    async def gauges(self) -> list[Sample]:
        """Outbox backlog and age, and each consumer's lag per partition, for /metrics."""
        service = self.settings.service_name
        backlog, oldest_age_s = await self.relay.backlog()
        samples: list[Sample] = [
            ("scribe_outbox_backlog", {"service": service}, backlog),
            ("scribe_outbox_oldest_age_seconds", {"service": service}, oldest_age_s),
        ]
        for consumer in self.consumers:
            for tp, lag in (await consumer.lag_by_partition()).items():
                labels = {"service": service, "group": consumer.name, "topic": tp.topic, "partition": str(tp.partition)}
                samples.append(("scribe_consumer_lag", labels, lag))
        return samples

    def start(self, runtime: ServiceRuntime) -> None:
        """Start relay and consumers; register their drain on the runtime's shutdown."""
        self.relay.start()
        for consumer in self.consumers:
            consumer.start()

        async def stop_consumers() -> None:
            for consumer in self.consumers:
                await consumer.stop()

        runtime.on_shutdown("consumers", stop_consumers)

    def register_final_flush(self, runtime: ServiceRuntime) -> None:
        """Register the relay's last flush; call after every other drain step is registered."""
        runtime.on_shutdown("outbox relay", self.relay.stop, phase="final")
