"""The wire format through a real Kafka-protocol broker (spec section 1).

Events encoded with :func:`encode_table` and produced with key = call_id come back
from a consumer equal, and :func:`decode_messages` keeps topic/partition/offset.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from benchmarks.bench_decode import realistic_events
from pipeline.embedded import EmbeddedKafka
from pipeline.io.wire import CALL_EVENT_SCHEMA_ID, ShippedSchemas, decode_messages, encode_table
from pipeline.rating.columns import CALL_EVENT_FIELDS

pytestmark = pytest.mark.integration

PARTITIONS = 4
N = 1_000


def create_topic(broker: EmbeddedKafka, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)


def consume(broker: EmbeddedKafka, topic: str, expected: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    return messages


def test_produce_consume_decode_roundtrip(kafka_broker: EmbeddedKafka) -> None:
    topic = f"cdr-wire-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, topic)
    events = realistic_events(N, seed=5)
    values = encode_table(events, CALL_EVENT_SCHEMA_ID)
    call_ids = events.column("call_id").to_pylist()

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 5})
    for call_id, value in zip(call_ids, values, strict=True):
        producer.produce(topic, key=call_id.encode(), value=value)
    producer.produce(topic, key=b"bad-1", value=b"not avro", partition=1)
    producer.produce(topic, key=b"bad-2", value=None, partition=2)  # a tombstone
    assert producer.flush(30) == 0

    messages = consume(kafka_broker, topic, N + 2)
    assert len(messages) == N + 2
    assert {m.partition() for m in messages} == set(range(PARTITIONS))  # keys spread

    decoded, dead = decode_messages(messages, ShippedSchemas())
    assert decoded.num_rows == N
    assert sorted(dead.select(["call_id", "reason", "source_partition"]).to_pylist(), key=str) == [
        {"call_id": "bad-1", "reason": "BAD_MAGIC_BYTE", "source_partition": 1},
        {"call_id": "bad-2", "reason": "BAD_MAGIC_BYTE", "source_partition": 2},
    ]
    names = [f.name for f in CALL_EVENT_FIELDS]
    got = decoded.select(names).sort_by("call_id")
    assert got.equals(events.sort_by("call_id"))

    # Sources are the real coordinates: per partition, offsets 0..k-1 (with the bad ones).
    both = pa.concat_tables(
        [t.select(["source_topic", "source_partition", "source_offset"]) for t in (decoded, dead)]
    )
    assert set(both.column("source_topic").to_pylist()) == {topic}
    for partition in range(PARTITIONS):
        mask = pc.equal(both.column("source_partition"), partition)
        offsets = both.filter(mask).column("source_offset").to_pylist()
        assert sorted(offsets) == list(range(len(offsets)))
    by_call = dict(zip(call_ids, values, strict=True))
    for row in decoded.select(["call_id", "payload"]).to_pylist():
        assert row["payload"] == by_call[row["call_id"]]
