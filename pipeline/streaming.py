"""Streaming commands: ``produce``, ``run``, ``dead-letters export`` and ``replay``.

Thin wiring of settings to adapters and the service; no rating logic here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from pydantic import SecretStr

from pipeline.errors import BrokerError
from pipeline.io import dead_letter_codec, dead_letter_topic, kafka_clients
from pipeline.io.avro_files import iter_event_batches
from pipeline.io.wire import (
    CALL_EVENT_SCHEMA_ID,
    MAGIC_BYTE,
    RegistrySchemas,
    SchemaResolver,
    ShippedSchemas,
    encode_table,
    value_subject,
    wire_header,
)
from pipeline.lake.lake import Lake
from pipeline.lake.partitions import PartitionTable
from pipeline.lake.tables import DEAD_PAYLOADS
from pipeline.refdata.redis_read import RedisReferenceReader
from pipeline.runtime import compaction
from pipeline.runtime.enrich import Enricher
from pipeline.runtime.health import redis_pinger
from pipeline.runtime.ports import Hook, LakeTable
from pipeline.runtime.service import StreamingService
from pipeline.runtime.stats import RunStats
from pipeline.settings import KafkaSettings, Settings
from pipeline.tariff_files import load_tariff_dir

LOG = logging.getLogger(__name__)


def resolver_for(schema_registry: SecretStr | str | None) -> SchemaResolver:
    """A registry client when a URL is configured, else the shipped fixed ids (the URL
    is a secret: it may hold basic-auth credentials)."""
    return RegistrySchemas(schema_registry) if schema_registry else ShippedSchemas()


@dataclass
class ProduceStats:
    events: int = 0
    seconds: float = 0.0


def produce_files(
    files: Sequence[Path],
    kafka: KafkaSettings,
    topic: str,
    *,
    schema_registry: SecretStr | str | None = None,
    progress: Callable[[int], None] | None = None,
    partitions: int = 4,
) -> ProduceStats:
    """Publish the events of Avro container files in the Confluent wire format
    (key = call_id). Events that do not fit the schema are skipped with a count in
    the log (they are not call events this pipeline can carry)."""
    from pipeline.avro.schemas import load_call_event_json, load_call_event_schema

    kafka_clients.ensure_topic(kafka, topic, partitions)
    resolver = resolver_for(schema_registry)
    schema_id = resolver.register(value_subject(topic), load_call_event_json())
    prod = kafka_clients.producer(kafka)
    stats = ProduceStats()
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.perf_counter()
    for path in files:
        for batch in iter_event_batches(path):
            values = encode_table(batch.events, schema_id, load_call_event_schema())
            keys = batch.events.column("call_id").to_pylist()
            for key, value in zip(keys, values, strict=True):
                while True:
                    try:
                        prod.produce(topic, value=value, key=key, on_delivery=delivered)
                        break
                    except BufferError:
                        prod.poll(0.05)
            prod.poll(0)
            stats.events += len(values)
            if progress:
                progress(len(values) + batch.dead_letters.num_rows)
    kafka_clients.flush_or_raise(prod, 120, "produce")
    if failures:
        raise BrokerError(f"{len(failures)} message(s) not delivered: {failures[0]}")
    stats.seconds = time.perf_counter() - started
    return stats


def build_service(settings: Settings, hook: Hook | None = None) -> StreamingService:
    """A ready-to-run :class:`StreamingService` from settings. With
    ``settings.metrics_port`` it already serves ``/metrics``, ``/healthz`` and
    ``/readyz`` on that port of ``settings.metrics_host`` until its ``run()`` returns. With
    ``settings.compaction.interval_s`` > 0 its scheduled compaction thread is running
    (:mod:`pipeline.runtime.compaction`) until ``service.stopping`` is set."""
    tariffs = load_tariff_dir(settings.tariffs)
    client = settings.redis.client()
    enricher = Enricher(RedisReferenceReader(client, namespace=settings.redis.namespace))
    kafka_clients.ensure_topic(settings.kafka, settings.dead_letter_topic, 1)
    cap = settings.dead_letter.max_message_bytes
    lake = Lake(settings.output, settings.lake)
    table: LakeTable = PartitionTable(lake)
    recorder = compaction.CycleRecorder(table) if settings.compaction.enabled else None
    service = StreamingService(
        settings,
        consumer=kafka_clients.consumer(settings.kafka, settings.group),
        dead_letters=dead_letter_topic.DeadLetterProducer(
            kafka_clients.producer(settings.kafka, **dead_letter_topic.producer_config(cap)),
            settings.dead_letter_topic,
            lake=lake.payloads,
            max_message_bytes=cap,
        ),
        lake=recorder or table,
        enricher=enricher,
        tariffs=tariffs,
        resolver=resolver_for(settings.schema_registry),
        hook=hook,
    )
    if recorder is not None:  # compacts the cycles it commits, until service.stopping
        compaction.start(
            lake.uri,
            settings.lake,
            settings.compaction,
            recorder,
            service.stopping,
            service.metrics.registry,
        )
    if settings.metrics_port is not None:  # /metrics, /healthz, /readyz until run() returns
        service.serve_http(
            settings.metrics_port,
            host=settings.metrics_host,
            redis_ping=redis_pinger(settings.redis),
        )
    return service


def run(settings: Settings) -> RunStats:
    """``cdr-pipeline run``: consume until a signal or ``stop_when_idle``."""
    service = build_service(settings)
    service.install_signal_handlers()
    try:
        return service.run()
    finally:
        service.stopping.set()  # ends the scheduled compaction too


def read_dead_letter_topic(
    kafka: KafkaSettings, topic: str, *, payloads: Lake | None = None, timeout_s: float = 60.0
) -> pa.Table:
    """Every dead letter on ``topic``, deduplicated by source event.

    Reads each partition from the beginning to its high watermark at the time of the
    call, by explicit assignment (no group join, nothing committed). A letter whose
    payload was too big for the topic gets its whole payload back from the
    ``payloads`` lake (where ``run`` kept it, checked against size and SHA-256); if it
    is not there its ``payload`` is null and its ``detail`` says why: a prefix is
    never returned as a payload.
    """
    consumer = kafka_clients.consumer(kafka, f"cdr-dead-letters-reader-{time.time_ns()}")
    rows = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return dead_letter_codec.to_table([])
        targets: dict[int, int] = {}
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                targets[p] = high
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions]
        )
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        # to the high watermarks, then on until the topic has been quiet for a second
        # (some brokers report watermarks a moment late)
        while targets or time.monotonic() - quiet_since < 1.0:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"reading {topic}: partitions {sorted(targets)} not read to the end in {timeout_s:.0f} s"
                )
            messages = consumer.consume(10_000, 0.2)
            if messages:
                quiet_since = time.monotonic()
            for msg in messages:
                if msg.error() is not None:
                    continue
                p, offset, value = msg.partition(), msg.offset(), msg.value()
                if value is not None:
                    try:
                        rows.append(dead_letter_codec.decode(value))
                    except ValueError:
                        LOG.warning(
                            "skipped a message on %s that is not a dead letter (offset %s)",
                            topic,
                            offset,
                        )
                if p in targets and offset is not None and offset + 1 >= targets[p]:
                    del targets[p]
    finally:
        consumer.close()
    missing = dead_letter_topic.resolve_payloads(rows, payloads.payloads if payloads else None)
    if missing:
        LOG.warning(
            "%d dead letter(s) on %s carry a payload truncated on the topic whose whole "
            "payload is not in %s: they are read without payload (see their detail) and "
            "cannot be replayed; export them with `dead-letters export --output LAKE` on "
            "the lake of the `run` that wrote them, then replay with `--lake LAKE`",
            missing,
            topic,
            payloads.table_uri(DEAD_PAYLOADS) if payloads else "any lake (none given)",
        )
    return dead_letter_codec.dedupe(dead_letter_codec.to_table(rows))


def export_dead_letters(kafka: KafkaSettings, topic: str, lake: Lake) -> int:
    """``dead-letters export``: append the topic's dead letters to the ``dead_letters``
    table, one commit, without the ones it already holds (one row per source event:
    exporting again adds only letters that are new on the topic). Payloads too big for
    the topic are taken whole from ``LAKE/dead_letter_payloads/`` (see
    :func:`read_dead_letter_topic`). Returns the letters appended."""
    table = read_dead_letter_topic(kafka, topic, payloads=lake)
    if table.num_rows == 0:
        return 0
    held = lake.read_dead_letters_keys()
    keys = [
        dead_letter_codec.dead_letter_key(r)
        for r in table.select(
            [c for c in table.column_names if c.startswith("source_")]
        ).to_pylist()
    ]
    fresh = [i for i, k in enumerate(keys) if k not in held]
    if fresh:
        lake.write_dead_letters(table.take(pa.array(fresh, pa.int64())))
    return len(fresh)


def replay_dead_letters(
    dead: pa.Table, kafka: KafkaSettings, topic: str, *, reasons: Sequence[str] | None = None
) -> int:
    """``dead-letters replay``: send the payloads of ``dead`` (optionally only some
    reasons) back to the input ``topic`` to be rated again once the cause is fixed.
    Streaming payloads are wire-format values already; batch payloads (Avro datums)
    get the shipped schema's header. Rows without payload are skipped and counted in
    the log: among them, letters whose payload was truncated on the dead-letter topic
    and not found whole in the lake (never replayed as a prefix)."""
    if reasons:
        dead = dead.filter(pc.is_in(dead.column("reason"), value_set=pa.array(list(reasons))))
    # a message as big as the one it came from must not be refused by this client
    sizes = pc.add(
        pc.fill_null(pc.binary_length(dead.column("payload")), 0),
        pc.fill_null(pc.binary_length(dead.column("call_id")), 0),
    )
    largest = (pc.max(sizes).as_py() or 0) if dead.num_rows else 0
    prod = kafka_clients.producer(kafka, **dead_letter_topic.producer_config(largest + 4096))
    header = wire_header(CALL_EVENT_SCHEMA_ID)
    sent = skipped = 0
    for row in dead.select(["payload", "call_id", "source_topic"]).to_pylist():
        payload = row["payload"]
        if payload is None:
            skipped += 1
            continue
        if row["source_topic"] is None and not (len(payload) >= 5 and payload[0] == MAGIC_BYTE):
            payload = header + payload
        prod.produce(topic, value=payload, key=row["call_id"])
        prod.poll(0)
        sent += 1
    kafka_clients.flush_or_raise(prod, 120, "replay")
    if skipped:
        LOG.warning(
            "skipped %d dead letter(s) without payload (a message without value, or a "
            "payload truncated on the dead-letter topic and not found whole: see detail)",
            skipped,
        )
    return sent
