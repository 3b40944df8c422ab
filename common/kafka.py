"""aiokafka clients configured for Scribe: acks=all producers, manual-commit consumers, topics.

The broker in the embedded default (tansu) has no idempotent or transactional producer, keeps
nothing across restarts, and auto-creates topics with its own partition count: topics are created
explicitly (and re-created when missing), and exactly-once is carried by the outbox and inbox.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, client_id: str, max_request_size: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        max_request_size=max_request_size,
        request_timeout_ms=15000,
        linger_ms=0,
    )


def make_consumer(
    bootstrap: str, group_id: str, topics: list[str], max_fetch_bytes: int, max_poll_interval_ms: int = 300000
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        # tansu's "latest" is wrong, and a new group must see what was published before it joined.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max_fetch_bytes,
        fetch_max_bytes=max(max_fetch_bytes, 52428800),
        max_poll_interval_ms=max_poll_interval_ms,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
        metadata_max_age_ms=10000,
    )


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int, timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics with ``partitions`` partitions; return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass
            log.info("created topics", extra={"topics": missing, "partitions": partitions})
        return missing
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Block until the broker answers metadata requests, or raise TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            await admin.list_topics()
            return
        except (KafkaError, OSError, asyncio.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s}s") from None
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
