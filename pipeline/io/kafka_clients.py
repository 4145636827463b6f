"""Kafka clients built from :class:`~pipeline.settings.KafkaSettings` (one place)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.errors import BrokerError
from pipeline.settings import KafkaSettings

#: librdkafka ``fetch.queue.backoff.ms`` of the consumer (see :func:`consumer`).
FETCH_QUEUE_BACKOFF_MS = 10


def consumer(kafka: KafkaSettings, group: str, **extra: Any) -> Consumer:
    """A consumer-group member that never commits or stores offsets by itself: the
    checkpoint (``pipeline.runtime``) commits what is durable in the lake."""
    conf = {
        **kafka.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, kafka.session_timeout_ms // 3),
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
        "queued.min.messages": kafka.prefetch_messages,
        "queued.max.messages.kbytes": kafka.prefetch_max_kbytes,
        # librdkafka waits this long (default 1 s) before fetching again for a partition
        # whose queue was full: with a small prefetch cap that stalled consume() on a
        # backlog (issue 11: 3.5 instead of 1.4 us per message in consume)
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        **extra,
    }
    return Consumer(conf)


def producer(kafka: KafkaSettings, **extra: Any) -> Producer:
    """A producer that waits for all in-sync replicas (dead letters must not be lost)."""
    conf = {
        **kafka.client_config(),
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 120_000,
        **extra,
    }
    return Producer(conf)


def ensure_topic(
    kafka: KafkaSettings, topic: str, partitions: int = 4, timeout: float = 30.0
) -> None:
    """Create ``topic`` if it does not exist (an existing topic is left as it is)."""
    admin = AdminClient(kafka.client_config())
    try:
        metadata = admin.list_topics(timeout=timeout)
        if topic in metadata.topics and not metadata.topics[topic].error:
            return
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        for future in futures.values():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    except KafkaException as exc:
        raise BrokerError(f"cannot create topic {topic!r}: {exc}") from exc


def flush_or_raise(prod: Producer, timeout: float, what: str) -> None:
    """Wait until every queued message is acknowledged; :class:`BrokerError` if not."""
    remaining = prod.flush(timeout)
    if remaining:
        raise BrokerError(f"{what}: {remaining} message(s) not acknowledged after {timeout:.0f} s")
