"""``cdr-pipeline run``: the streaming service, a consumer-group member.

Per poll: decode the batch columnar (:mod:`pipeline.io.wire`), enrich it from Redis
(:mod:`pipeline.runtime.enrich`), rate it with the pure core, and append the results
to per-partition buffers. A due buffer is *flushed*, in this order:

1. its dead letters are produced and acknowledged by Kafka;
2. its rated records are written as Parquet parts named by topic, partition and
   offset range (temporary name, fsync, rename);
3. the lake checkpoint records the range's last offset (:mod:`.checkpoint`);
4. the Kafka offset ``last + 1`` is committed.

On assignment a partition resumes after the last offset the lake holds; on
revocation its buffer is flushed first. Infrastructure failures (Redis, Kafka, the
lake) pause consumption and retry; they never turn data into dead letters.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.errors import InfrastructureError, ReferenceStoreError
from pipeline.io.dead_letter_topic import DeadLetterProducer
from pipeline.io.lake import Lake
from pipeline.io.wire import KafkaSources, SchemaResolver, decode_batch
from pipeline.rating.compiled import check_accounts_have_tariffs
from pipeline.rating.rate import rate_batch
from pipeline.rating.tariffs import TariffBook
from pipeline.runtime.buffer import PartitionBuffer
from pipeline.runtime.checkpoint import Checkpoints, part_name
from pipeline.runtime.enrich import Enricher
from pipeline.settings import Settings

LOG = logging.getLogger("cdr_pipeline.run")


@dataclass
class RunStats:
    """Counters of one ``run`` (``consumed == rated + dead_letters`` once flushed)."""

    consumed: int = 0
    rated: int = 0
    dead_letters: int = 0
    files: int = 0
    flushes: int = 0
    started: float = field(default_factory=time.monotonic)
    busy_seconds: float = 0.0
    first_message_at: float | None = None
    last_flush_at: float | None = None
    by_reason: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[npt.NDArray[np.int64]] = field(default_factory=list)
    durable_offsets: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)

    def latency_percentiles(self) -> tuple[float, float]:
        """Event-to-lake latency (ms): p50, p99 over every flushed event."""
        if not self.latencies_ms:
            return (0.0, 0.0)
        values = np.concatenate(self.latencies_ms)
        if values.size == 0:
            return (0.0, 0.0)
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))


Hook = Callable[[str, dict[str, Any]], None]


class StreamingService:
    """One consumer-group member. Construct, then :meth:`run` until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        dead_letters: DeadLetterProducer,
        enricher: Enricher,
        tariffs: TariffBook,
        resolver: SchemaResolver,
        hook: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.enricher = enricher
        self.tariffs = tariffs
        self.resolver = resolver
        self.lake = Lake(settings.output)
        self.checkpoints = Checkpoints(self.lake)
        self.buffers: dict[int, PartitionBuffer] = {}
        self.stats = RunStats()
        self.stopping = threading.Event()
        self.generation = 0  # bumped on every assignment change
        self.assigned = False
        self.hook = hook  # test seam: called at named points ("flush:before-checkpoint", ...)

    # --------------------------------------------------------------- group membership
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            resume = self.checkpoints.recover(tp.topic, tp.partition)
            if resume is not None:
                tp.offset = resume
            self.buffers[tp.partition] = PartitionBuffer(tp.topic, tp.partition)
        consumer.assign(partitions)
        self.assigned = True
        LOG.info("assigned partitions=%s", [(tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            buffer = self.buffers.pop(tp.partition, None)
            if buffer is not None and not buffer.empty:
                try:
                    self._flush(buffer)
                except InfrastructureError as exc:  # the next owner rates the range again
                    LOG.warning(
                        "revoked partition=%d not flushed (%s); next owner resumes",
                        tp.partition,
                        exc,
                    )
        consumer.unassign()
        self.assigned = False
        LOG.info("revoked partitions=%s", [tp.partition for tp in partitions])

    # --------------------------------------------------------------- main loop
    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: stop after flushing, committing and leaving the group."""

        def stop(signum: int, _frame: FrameType | None) -> None:
            LOG.info("signal=%d: stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> RunStats:
        """Consume until stopped (signal, :attr:`stopping`, or ``stop_when_idle``)."""
        check_accounts_have_tariffs(self.enricher.snapshot(), self.tariffs)
        s = self.settings
        self.consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_message = time.monotonic()
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(s.batch.poll_max_messages, 0.2)
                now = time.monotonic()
                good = [m for m in messages if self._usable(m)]
                if good:
                    last_message = now
                    self._process(good)
                self._flush_due(time.monotonic())
                idle = time.monotonic() - last_message
                if s.stop_when_idle is not None and idle >= s.stop_when_idle:
                    LOG.info("idle for %.1f s: stopping", idle)
                    break
        finally:
            self._shutdown()
        return self.stats

    def _usable(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            return False
        if err.fatal():
            raise InfrastructureError(f"kafka: {err.str()}")
        LOG.warning("kafka error: %s", err.str())
        return False

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        n = len(messages)
        values = [m.value() for m in messages]
        keys = [m.key() for m in messages]
        partitions = np.fromiter((m.partition() for m in messages), np.int32, n)
        offsets = np.fromiter((m.offset() for m in messages), np.int64, n)
        stamps = np.fromiter((m.timestamp()[1] for m in messages), np.int64, n)
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        generation = self.generation
        events, decode_dead = self._retry(
            lambda: decode_batch(
                values,
                KafkaSources(self.settings.topic, partitions, offsets),
                self.resolver,
                keys=keys,
            ),
            "schema registry",
        )
        ref = self._retry(lambda: self.enricher.for_batch(events), "redis")
        if generation != self.generation:
            LOG.info(
                "assignment changed during a batch: dropping %d in-flight messages (they will be re-read)",
                n,
            )
            return
        result = rate_batch(events, ref, self.tariffs)
        dead = pa.concat_tables([decode_dead, result.dead_letters])
        now = time.monotonic()
        for p in np.unique(partitions).tolist():
            buffer = self.buffers.get(p)
            if buffer is None:  # not ours any more
                continue
            mine = partitions == p
            rated_p = result.rated.filter(pc.equal(result.rated.column("source_partition"), p))
            dead_p = dead.filter(pc.equal(dead.column("source_partition"), p))
            buffer.add(
                rated_p,
                dead_p,
                int(offsets[mine].min()),
                int(offsets[mine].max()),
                stamps[mine],
                now,
            )
        self.stats.consumed += n
        self.stats.busy_seconds += time.perf_counter() - started

    def _retry(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action``; on an infrastructure error pause consumption and retry with
        backoff until it succeeds or the service is stopped."""
        delay = 0.2
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    return action()
                except InfrastructureError as exc:
                    if self.stopping.is_set():
                        raise
                    if not paused:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                        kind = "redis" if isinstance(exc, ReferenceStoreError) else what
                        LOG.warning("%s unavailable, pausing consumption: %s", kind, exc)
                    self.consumer.poll(0)  # serve group callbacks while paused
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())
                LOG.info("%s back: resuming consumption", what)

    # --------------------------------------------------------------- flushing
    def _flush_due(self, now: float) -> None:
        for buffer in list(self.buffers.values()):
            if buffer.due(self.settings.batch, now):
                self._retry(lambda b=buffer: self._flush(b), "lake or kafka")  # type: ignore[misc]

    def _flush(self, buffer: PartitionBuffer) -> None:
        rated, dead, first, last, stamps = buffer.take()
        try:
            self._write(buffer, rated, dead, first, last, stamps)
        except InfrastructureError:
            # put it back untouched so a retry writes the same range
            buffer.add(
                rated, dead, first, last, stamps, time.monotonic() - self.settings.batch.max_age_s
            )
            raise

    def _write(
        self,
        buffer: PartitionBuffer,
        rated: pa.Table,
        dead: pa.Table,
        first: int,
        last: int,
        stamps: npt.NDArray[np.int64],
    ) -> None:
        topic, p = buffer.topic, buffer.partition
        self._hook("flush:start", partition=p, first=first, last=last)
        self.dead_letters.send(dead)
        self._hook("flush:dead-letters-acked", partition=p, first=first, last=last)
        files = self.lake.write_rated(rated, part_name(topic, p, first, last))
        self._hook("flush:files-written", partition=p, first=first, last=last)
        self.checkpoints.commit(topic, p, last)
        self._hook("flush:checkpointed", partition=p, first=first, last=last)
        try:
            self.consumer.commit(offsets=[TopicPartition(topic, p, last + 1)], asynchronous=False)
        except Exception as exc:  # the lake is the source of truth; Kafka's offset is for lag
            LOG.warning("kafka offset commit failed partition=%d: %s", p, exc)
        now_ms = int(time.time() * 1000)
        self.stats.latencies_ms.append(now_ms - stamps)
        self.stats.rated += rated.num_rows
        self.stats.dead_letters += dead.num_rows
        for reason in dead.column("reason").to_pylist():
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        self.stats.files += len(files)
        self.stats.flushes += 1
        self.stats.last_flush_at = time.monotonic()
        self.stats.durable_offsets[p] = last
        LOG.info(
            "flushed topic=%s partition=%d offsets=%d-%d rated=%d dead_letters=%d files=%d",
            topic,
            p,
            first,
            last,
            rated.num_rows,
            dead.num_rows,
            len(files),
        )

    def _hook(self, point: str, **info: Any) -> None:
        if self.hook is not None:
            self.hook(point, info)

    def _shutdown(self) -> None:
        try:
            for buffer in list(self.buffers.values()):
                if not buffer.empty:
                    try:
                        self._flush(buffer)
                    except InfrastructureError as exc:
                        LOG.warning(
                            "partition=%d not flushed at shutdown (%s); it will be re-read",
                            buffer.partition,
                            exc,
                        )
        finally:
            self.consumer.close()  # leaves the group
            LOG.info(
                "stopped consumed=%d rated=%d dead_letters=%d files=%d",
                self.stats.consumed,
                self.stats.rated,
                self.stats.dead_letters,
                self.stats.files,
            )
