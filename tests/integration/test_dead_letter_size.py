"""Issue 10 #2: one oversized bad message must not stop the consumer group.

Against the embedded broker (tansu 0.6, which accepts messages of 20 MB and more:
it enforces no message size limit; librdkafka's producer refuses values over its
``message.max.bytes``, 1,000,000 by default, in ``produce()``), good events mixed with
malformed ones just under and just over 1 MB / 1 MiB and around the dead-letter cap.
``run`` must exit 0, every offset must be one rated record or one dead letter, the
big dead letters on the topic must be capped with size and SHA-256, and the whole
payloads must be in the lake, where export and replay find them (spec R1).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from pipeline.embedded import EmbeddedKafka, EmbeddedRedis
from pipeline.io import dead_letter_codec, kafka_clients
from pipeline.io.schemas import load_call_event_schema
from pipeline.io.wire import encode
from pipeline.lake.lake import Lake
from pipeline.settings import KafkaSettings
from pipeline.streaming import read_dead_letter_topic
from tests.integration.streaming import lake_rated, load_sample_refdata, unique
from tests.unit.events import event

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CAP = dead_letter_codec.DEFAULT_MAX_MESSAGE_BYTES
ROOT = Path(__file__).resolve().parents[2]


def _produce(
    brokers: str, topic: str, messages: list[tuple[bytes, bytes]]
) -> dict[bytes, tuple[int, int]]:
    """Produce (key, value) pairs; the (partition, offset) of each key."""
    prod = kafka_clients.producer(KafkaSettings(brokers=brokers), **{"message.max.bytes": 30 * MiB})
    where: dict[bytes, tuple[int, int]] = {}
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err)
        else:
            key, partition, offset = msg.key(), msg.partition(), msg.offset()
            assert isinstance(key, bytes)
            assert partition is not None
            assert offset is not None
            where[key] = (partition, offset)

    for key, value in messages:
        prod.produce(topic, key=key, value=value, on_delivery=delivered)
        prod.poll(0)
    kafka_clients.flush_or_raise(prod, 60, "test produce")
    assert not failures
    return where


def _raw_topic(brokers: str, topic: str, expected: int, timeout: float = 60) -> list[Message]:
    """Every message of a one-partition topic, as the broker holds it."""
    consumer = kafka_clients.consumer(KafkaSettings(brokers=brokers), unique("raw"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.5) if m.error() is None]
        time.sleep(1)  # nothing more than expected arrives
        out += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return out


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_oversized_bad_messages_become_capped_dead_letters_and_run_exits_0(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Issue 10 #2 (R1): junk of ~1 MB and ~1 MiB, Avro datums with a 1 MiB string,
    and payloads just under and over the dead-letter cap, among good events."""
    load_sample_refdata(redis_server.url)
    brokers = kafka_broker.bootstrap
    kafka = KafkaSettings(brokers=brokers)
    topic, dlq, replayed = unique("big"), unique("big-dlq"), unique("big-replay")
    lake = tmp_path / "lake"
    kafka_clients.ensure_topic(kafka, topic, 2)
    kafka_clients.ensure_topic(kafka, dlq, 1)
    kafka_clients.ensure_topic(kafka, replayed, 1)
    schema = load_call_event_schema()
    rng = random.Random(10)

    def junk(size: int) -> bytes:
        return bytes([7]) + rng.randbytes(size - 1)  # first byte not the magic byte

    good = [
        event(call_id=f"good-{i}", account_id="ACC-1001", calling_number="+12125550100")
        for i in range(300)
    ]
    bad: dict[bytes, tuple[bytes, str]] = {
        # just under librdkafka's message.max.bytes (1,000,000 with key and overhead)
        b"junk-under-1MB": (junk(999_000), "BAD_MAGIC_BYTE"),
        b"junk-over-1MiB": (junk(MiB + 1), "BAD_MAGIC_BYTE"),
        b"junk-4MiB": (junk(4 * MiB), "BAD_MAGIC_BYTE"),
        # valid Avro datums with a 1 MiB string, invalid for rating
        b"string-call-id": (
            encode(event(call_id="c" * MiB, account_id="ACC-1001", duration_ms=-5), 1, schema),
            "NEGATIVE_DURATION",
        ),
        b"string-switch": (
            encode(event(call_id="sw", account_id="ACC-0000", switch_id="s" * MiB), 1, schema),
            "UNKNOWN_ACCOUNT",
        ),
        # around the dead-letter cap (262,144 bytes: ~196,000 payload bytes in base64)
        b"cap-under": (junk(150_000), "BAD_MAGIC_BYTE"),
        b"cap-over": (junk(200_000), "BAD_MAGIC_BYTE"),
        b"small": (junk(60), "BAD_MAGIC_BYTE"),
    }
    messages = [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in good]
    for i, (key, (value, _)) in enumerate(bad.items()):
        messages.insert(i * 30 + 5, (key, value))
    where = _produce(brokers, topic, messages)

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDR_KAFKA__BROKERS": brokers,
        "CDR_REDIS__URL": redis_server.url,
        "CDR_OUTPUT": str(lake),
        "CDR_BATCH__MAX_AGE_S": "0.5",
    }
    run = _cli(
        ["run", "--topic", topic, "--group", unique("g"), "--dead-letter-topic", dlq,
         "--stop-when-idle", "6"],
        env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr

    # every offset: exactly one rated record or one dead letter
    rated = lake_rated(lake)
    assert sorted(rated.column("call_id").to_pylist()) == sorted(str(e["call_id"]) for e in good)
    raw = _raw_topic(brokers, dlq, len(bad))
    letters = [dead_letter_codec.decode(_bytes(m.value())) for m in raw]
    rated_offsets = set(
        zip(
            rated.column("source_partition").to_pylist(),
            rated.column("source_offset").to_pylist(),
            strict=True,
        )
    )
    dead_offsets = {(d["source_partition"], d["source_offset"]) for d in letters}
    assert len(letters) == len(dead_offsets) == len(bad)  # one each, none twice
    assert not rated_offsets & dead_offsets
    assert rated_offsets | dead_offsets == set(where.values())

    # on the topic: capped, with size and sha256; whole payloads in the lake
    by_key = {key: where[key] for key in bad}
    for message, letter in zip(raw, letters, strict=True):
        key = next(
            k
            for k, w in by_key.items()
            if w == (letter["source_partition"], letter["source_offset"])
        )
        value, reason = bad[key]
        assert letter["reason"] == reason
        size = len(_bytes(message.key())) + len(_bytes(message.value()))
        assert size + dead_letter_codec.RECORD_OVERHEAD <= CAP
        assert letter["payload_size"] == len(value)
        assert letter["payload_sha256"] == hashlib.sha256(value).hexdigest()
        kept = lake / dead_letter_codec.payload_ref(letter)
        if key in (b"small", b"cap-under"):
            assert not letter["payload_truncated"]
            assert letter["payload"] == value
            assert not kept.exists()
        else:
            assert letter["payload_truncated"], key
            assert letter["payload"] is None
            assert value.startswith(letter["payload_prefix"])
            assert len(letter["payload_prefix"]) > 150_000
            assert hashlib.sha256(kept.read_bytes()).hexdigest() == letter["payload_sha256"]
    call_id = next(d["call_id"] for d in letters if d["reason"] == "NEGATIVE_DURATION")
    assert call_id.startswith("c" * 256)
    assert call_id.endswith("characters, truncated]")

    # read back with the lake: every payload whole, none a prefix
    payloads = _payloads(read_dead_letter_topic(kafka, dlq, payloads=Lake(lake)).to_pylist())
    assert payloads == sorted(v for v, _ in bad.values())
    # without the lake: the truncated ones have no payload (never the prefix)
    without = read_dead_letter_topic(kafka, dlq).column("payload").to_pylist()
    assert sorted(p for p in without if p is not None) == sorted(
        [bad[b"small"][0], bad[b"cap-under"][0]]
    )

    # export puts the whole payloads into LAKE/dead_letters; replay sends them whole
    export = _cli(["dead-letters", "export", "--topic", dlq, "--output", str(lake)], env)
    assert export.returncode == 0, export.stderr[-3000:]
    assert _payloads(Lake(lake).read_dead_letters().to_pylist()) == sorted(
        v for v, _ in bad.values()
    )
    replay = _cli(["dead-letters", "replay", "--topic", replayed, "--lake", str(lake)], env)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert sorted(_bytes(m.value()) for m in _raw_topic(brokers, replayed, len(bad))) == sorted(
        v for v, _ in bad.values()
    )
    # replay straight from the topic finds the whole payloads in the configured lake
    again = unique("big-replay")
    kafka_clients.ensure_topic(kafka, again, 1)
    replay = _cli(["dead-letters", "replay", "--topic", again, "--from-topic", dlq], env)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert sorted(_bytes(m.value()) for m in _raw_topic(brokers, again, len(bad))) == sorted(
        v for v, _ in bad.values()
    )
    # ... and with another lake configured it skips them, saying why, never a prefix
    elsewhere = unique("big-replay")
    kafka_clients.ensure_topic(kafka, elsewhere, 1)
    replay = _cli(
        ["dead-letters", "replay", "--topic", elsewhere, "--from-topic", dlq],
        {**env, "CDR_OUTPUT": str(tmp_path / "other")},
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert "6 dead letter(s)" in replay.stderr
    assert "cannot be replayed" in replay.stderr
    assert sorted(_bytes(m.value()) for m in _raw_topic(brokers, elsewhere, 2)) == sorted(
        [bad[b"small"][0], bad[b"cap-under"][0]]
    )


def _bytes(data: bytes | str | None) -> bytes:
    assert isinstance(data, bytes)
    return data


def _payloads(rows: list[dict[str, Any]]) -> list[bytes]:
    return sorted(r["payload"] for r in rows)
