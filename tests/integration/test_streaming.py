"""The streaming service against a real Kafka-protocol broker and Redis (issue 3)."""

from __future__ import annotations

import io
import random
import struct
import time
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.avro.schemas import load_call_event_schema
from pipeline.batch import rate_files
from pipeline.embedded import EmbeddedKafka, EmbeddedRedis, embedded_redis
from pipeline.generate import write_generated
from pipeline.io.wire import encode, wire_header
from pipeline.lake.lake import Lake
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.settings import KafkaSettings
from pipeline.streaming import produce_files
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.integration.streaming import (
    SOURCE,
    ServiceThread,
    dead_letters,
    lake_rated,
    load_sample_refdata,
    produce_raw,
    settings_for,
    unique,
)
from tests.unit.events import event
from tests.unit.test_avro_parity import CASES as PARITY_CASES

pytestmark = pytest.mark.integration


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    path = tmp_path / "traffic.avro"
    write_generated(path, 20_000, seed=11, refdata_dir=SAMPLE_REFDATA_DIR)
    return path


def test_run_lake_equals_batch_lake(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, traffic: Path, tmp_path: Path
) -> None:
    """Issue 3: the lake from ``run`` equals the lake from ``rate`` row for row, and
    consumed == rated + dead-lettered (R1)."""
    batch_lake = tmp_path / "batch"
    stats = rate_files([traffic], Lake(batch_lake), load_reference_dir(SAMPLE_REFDATA_DIR),
                       load_tariff_dir(DEFAULT_TARIFFS_DIR))  # fmt: skip
    load_sample_refdata(redis_server.url)
    topic = unique("events")
    produced = produce_files([traffic], KafkaSettings(brokers=kafka_broker.bootstrap), topic)
    stream_lake = tmp_path / "stream"
    worker = ServiceThread(
        settings_for(kafka_broker.bootstrap, redis_server.url, stream_lake, topic)
    )
    worker.start()
    worker.join(120)
    assert not worker.is_alive()
    assert worker.error is None
    run = worker.stats
    assert run is not None
    assert run.consumed == produced.events == stats.events
    assert run.consumed == run.rated + run.dead_letters

    key = ["call_id", "revision"]
    a = lake_rated(batch_lake).drop_columns(SOURCE).sort_by([(k, "ascending") for k in key])
    b = lake_rated(stream_lake).drop_columns(SOURCE).sort_by([(k, "ascending") for k in key])
    assert a.num_rows == b.num_rows == stats.rated
    assert a.equals(b)
    dead = dead_letters(kafka_broker.bootstrap, f"{topic}-dlq")
    assert dead.num_rows == stats.dead_letters
    batch_dead = Lake(batch_lake).read_dead_letters()
    assert sorted(dead.column("reason").to_pylist()) == sorted(
        batch_dead.column("reason").to_pylist()
    )
    assert sorted(dead.column("call_id").to_pylist()) == sorted(
        batch_dead.column("call_id").to_pylist()
    )


def _datum(record: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_call_event_schema(), record)
    return buf.getvalue()


def test_malformed_messages_are_dead_lettered_and_service_keeps_running(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """R1 / issue 3: random bytes, truncated datums, unknown schema id, wrong magic byte
    and valid Avro with invalid values (and the bad datums of the batch/streaming parity
    test) each become one dead letter with a reason code,
    good messages around them are rated, and consumed == rated + dead-lettered."""
    load_sample_refdata(redis_server.url)
    topic = unique("malformed")
    schema = load_call_event_schema()
    rng = random.Random(5)
    good = [
        event(call_id=f"good-{i}", account_id="ACC-1001", calling_number="+12125550100")
        for i in range(50)
    ]
    truncated = encode(event(call_id="trunc", account_id="ACC-1001"), 1, schema)[:-7]
    expected = {
        b"rand": "BAD_MAGIC_BYTE",  # random bytes, first byte not 0
        b"rand0": "DECODE_ERROR",  # header ok, garbage datum
        b"trunc": "DECODE_ERROR",
        b"unknown-id": "UNKNOWN_SCHEMA_ID",
        b"magic": "BAD_MAGIC_BYTE",
        b"short": "BAD_MAGIC_BYTE",
        b"neg": "NEGATIVE_DURATION",
        b"acct": "UNKNOWN_ACCOUNT",
        b"called": "MALFORMED_CALLED_NUMBER",
    }
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"rand", bytes([7]) + rng.randbytes(60)),
        (b"rand0", wire_header(1) + rng.randbytes(80)),
        (b"trunc", truncated),
        (b"unknown-id", wire_header(4242) + _datum(event(call_id="u", account_id="ACC-1001"))),
        (b"magic", b"\x01" + encode(event(call_id="m", account_id="ACC-1001"), 1, schema)[1:]),
        (b"short", b"\x00\x00"),
        (b"neg", encode(event(call_id="neg", account_id="ACC-1001", duration_ms=-5), 1, schema)),
        (b"acct", encode(event(call_id="acct", account_id="ACC-0000"), 1, schema)),
        (
            b"called",
            encode(
                event(call_id="called", account_id="ACC-1001", called_number="18005551234"),
                1,
                schema,
            ),
        ),
    ]
    # The datums of the batch/streaming parity test (tests/unit/test_avro_parity.py)
    # that the shipped schema can carry: the same reasons through the real broker.
    for name, (datum, reason) in PARITY_CASES.items():
        if reason != "RATED" and name != "unknown enum symbol":
            bad.append((name.encode(), wire_header(1) + datum))
            expected[name.encode()] = str(reason)
    messages: list[tuple[bytes | None, bytes | None]] = [
        (str(e["call_id"]).encode(), encode(e, 1, schema)) for e in good
    ]
    for i, msg in enumerate(bad):
        messages.insert(i * 5 + 2, msg)
    from pipeline.io import kafka_clients

    kafka_clients.ensure_topic(KafkaSettings(brokers=kafka_broker.bootstrap), topic, 2)
    produce_raw(kafka_broker.bootstrap, topic, messages)
    worker = ServiceThread(
        settings_for(kafka_broker.bootstrap, redis_server.url, tmp_path / "lake", topic)
    )
    worker.start()
    worker.join(120)
    assert worker.error is None
    assert worker.stats is not None
    assert worker.stats.consumed == len(messages) == worker.stats.rated + worker.stats.dead_letters
    rated = lake_rated(tmp_path / "lake")
    assert sorted(rated.column("call_id").to_pylist()) == sorted(str(e["call_id"]) for e in good)
    dead = dead_letters(kafka_broker.bootstrap, f"{topic}-dlq")
    by_source = {}
    for row in dead.to_pylist():
        raw = next(v for k, v in bad if v == row["payload"])
        key = next(k for k, v in bad if v == raw)
        by_source[key] = row["reason"]
    assert by_source == expected
    assert all(p is not None for p in dead.column("payload").to_pylist())
    assert struct.pack(">I", 4242)  # the unknown id really was unknown


def test_redis_outage_pauses_and_resumes_without_dead_letters(
    kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    """Issue 3: a Redis outage mid-stream pauses consumption; nothing is rated without
    enrichment and nothing is dead-lettered; when Redis is back every event is rated."""
    topic = unique("outage")
    lake = tmp_path / "lake"
    schema = load_call_event_schema()
    first = [
        event(call_id=f"a-{i}", account_id="ACC-1001", calling_number=f"+1212555{i:04d}")
        for i in range(200)
    ]
    second = [
        event(call_id=f"b-{i}", account_id="ACC-1002", calling_number=f"+1312555{i:04d}")
        for i in range(300)
    ]
    with embedded_redis() as redis:
        load_sample_refdata(redis.url)
        from pipeline.io import kafka_clients

        kafka_clients.ensure_topic(KafkaSettings(brokers=kafka_broker.bootstrap), topic, 2)
        worker = ServiceThread(
            settings_for(kafka_broker.bootstrap, redis.url, lake, topic, stop_when_idle=None)
        )
        worker.service.enricher._version_check_s = 0.1
        worker.start()
        produce_raw(
            kafka_broker.bootstrap,
            topic,
            [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in first],
        )
        _wait(lambda: lake_rated(lake).num_rows == len(first), 60)
        redis.stop()
        produce_raw(
            kafka_broker.bootstrap,
            topic,
            [(str(e["call_id"]).encode(), encode(e, 1, schema)) for e in second],
        )
        time.sleep(4)
        assert lake_rated(lake).num_rows == len(first)  # paused: nothing rated without enrichment
        assert worker.is_alive()
        redis.restart()
        load_sample_refdata(redis.url)
        _wait(lambda: lake_rated(lake).num_rows == len(first) + len(second), 60)
        stats = worker.stop()
    assert stats.dead_letters == 0
    assert dead_letters(kafka_broker.bootstrap, f"{topic}-dlq").num_rows == 0
    rated = lake_rated(lake)
    assert pc.count_distinct(rated.column("call_id")).as_py() == len(first) + len(second)
    assert set(rated.column("account_id").to_pylist()) == {"ACC-1001", "ACC-1002"}
    assert isinstance(rated, pa.Table)


def _wait(condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")
