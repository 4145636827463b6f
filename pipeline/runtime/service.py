"""``cdr-pipeline run``: the streaming service, a consumer-group member.

Per poll: decode the batch columnar (:mod:`pipeline.io.wire`), enrich it from Redis
(:mod:`pipeline.runtime.enrich`), rate it with the pure core, and append the results
to per-partition buffers. A due buffer is *flushed* by one writer thread (in
submission order, overlapping the next batch's rating), in this order:

1. its dead letters are produced and acknowledged by Kafka (each capped at
   ``dead_letter.max_message_bytes``; a payload too big for that is first written
   whole to ``LAKE/dead_letter_payloads/``, see :mod:`pipeline.io.dead_letter_topic`);
2. its rated records and the range's last offset are committed to the lake's
   ``rated_calls`` table in ONE Delta commit (:meth:`Lake.commit_partition`: the
   offset is the application transaction ``<topic>+<partition>``);
3. back on the main thread, the Kafka offset ``last + 1`` is committed.

On assignment a partition resumes after the last offset the lake holds; on
revocation its buffer is flushed first. A commit the lake refuses because another
member committed that partition since (:class:`FencedError`: this member was paused
past its session and the partition moved) is dropped, never retried; if the
partition is still assigned here, every partition is re-read from the lake.
Infrastructure failures (Redis, Kafka, the
lake) pause consumption and retry; they never turn data into dead letters. A dead
letter Kafka does not acknowledge is such a failure (retried, never a crash).

Observability: :attr:`StreamingService.metrics` (:mod:`pipeline.metrics`) is updated
once per poll batch and once per flush; consumer lag is recomputed at most every
``LAG_INTERVAL_S`` from librdkafka's cached high watermarks (no broker round trip).
:meth:`StreamingService.serve_http` exposes ``/metrics``, ``/healthz`` and ``/readyz``
(:mod:`.health`); :attr:`last_tick`, :attr:`assigned` and :attr:`paused_on` are what
the probes read.
"""

from __future__ import annotations

import logging
import operator
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from pipeline.errors import FencedError, InfrastructureError, ReferenceStoreError
from pipeline.io.dead_letter_topic import DeadLetterProducer
from pipeline.io.wire import KafkaSources, SchemaResolver, decode_batch
from pipeline.lake.lake import Lake
from pipeline.lake.partitions import PartitionTable
from pipeline.metrics import ServiceMetrics
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, RATED_SCHEMA
from pipeline.rating.compiled import check_accounts_have_tariffs
from pipeline.rating.numbers import EventNumbers, parse_event_numbers
from pipeline.rating.rate import rate_batch
from pipeline.rating.reference import ReferenceData
from pipeline.rating.tariffs import TariffBook
from pipeline.runtime.buffer import PartitionBuffer
from pipeline.runtime.enrich import Enricher, origin_tns
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.runtime.health import ObservabilityServer

LOG = logging.getLogger("cdr_pipeline.run")

#: Seconds between two consumer-lag computations (each is a few microseconds).
LAG_INTERVAL_S = 1.0


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

    #: At most this many recent latency samples are kept (a long run must not grow).
    max_latency_samples: int = 2_000_000

    def record_latencies(self, latencies_ms: npt.NDArray[np.int64]) -> None:
        """Keep the event-to-lake latencies of a flush (the most recent samples only)."""
        self.latencies_ms.append(latencies_ms)
        kept = sum(a.size for a in self.latencies_ms)
        while (
            len(self.latencies_ms) > 1
            and kept - self.latencies_ms[0].size >= self.max_latency_samples
        ):
            kept -= self.latencies_ms.pop(0).size

    def latency_percentiles(self) -> tuple[float, float]:
        """Event-to-lake latency (ms): p50, p99 over the recent flushed events."""
        if not self.latencies_ms:
            return (0.0, 0.0)
        values = np.concatenate(self.latencies_ms)
        if values.size == 0:
            return (0.0, 0.0)
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))


Hook = Callable[[str, dict[str, Any]], None]
#: A decoded batch: events, decode dead letters, parsed numbers, LNP numbers to ask.
Decoded = tuple[pa.Table, pa.Table, EventNumbers, npt.NDArray[np.int64]]


class _MessageKeys(Sequence[bytes | str | None]):
    """The keys of a poll's messages, read only where needed (the call id of a
    message that does not decode, for its dead letter)."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> bytes | str | None: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes | str | None]: ...
    def __getitem__(self, index: int | slice) -> bytes | str | list[bytes | str | None] | None:
        if isinstance(index, slice):
            return [m.key() for m in self._messages[index]]
        return self._messages[index].key()


@dataclass
class _Batch:
    """One poll's messages between :meth:`StreamingService._stage` and
    :meth:`StreamingService._complete` (parallel arrays, in poll order)."""

    started: float
    values: list[bytes | None]
    keys: Sequence[bytes | str | None]
    partitions: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    stamps: npt.NDArray[np.int64]
    generation: int  # the assignment the messages were polled under
    decoded: Future[Decoded] | None = None  # on the decode thread
    reference: Future[ReferenceData] | None = None  # on the lookup thread
    main_seconds: float = 0.0


#: Writes that may wait for the writer thread before consumption pauses.
MAX_INFLIGHT = 2
#: How long a revocation waits for pending writes before abandoning their retries.
REVOKE_DRAIN_S = 30.0
#: How long a clean stop waits for pending writes (e.g. during an outage).
SHUTDOWN_DRAIN_S = 60.0

_EMPTY_RATED = RATED_SCHEMA.empty_table()
_SECOND = operator.itemgetter(1)  # of a message's (timestamp type, timestamp)
_EMPTY_DEAD = DEAD_LETTER_SCHEMA.empty_table()


def _split_by_partition(table: pa.Table) -> dict[int, pa.Table]:
    """Rows of ``table`` per ``source_partition``, with one sort instead of one
    filter per partition (order within a partition is kept)."""
    if table.num_rows == 0:
        return {}
    parts = np.asarray(table.column("source_partition").to_numpy(zero_copy_only=False))
    change = np.flatnonzero(np.diff(parts)) + 1
    run_parts = parts[np.concatenate([[0], change])]
    if np.unique(run_parts).size == run_parts.size:  # each partition in one run: slice, no copy
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [parts.size]])
        return {int(parts[a]): table.slice(a, b - a) for a, b in zip(starts, ends, strict=True)}
    order = np.argsort(parts, kind="stable")
    ordered = table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(parts[order])) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    return {
        int(parts[order[a]]): ordered.slice(a, b - a) for a, b in zip(starts, ends, strict=True)
    }


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
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.enricher = enricher
        self.tariffs = tariffs
        self.resolver = resolver
        self.lake = PartitionTable(Lake(settings.output, settings.lake))
        self._fenced: set[int] = set()  # partitions whose commit was refused (writer thread)
        self._resyncing = False
        self.buffers: dict[int, PartitionBuffer] = {}
        self.stats = RunStats()
        self.stopping = threading.Event()
        self.generation = 0  # bumped on every assignment change
        self.assigned = False
        self.hook = hook  # test seam: called at named points ("flush:committed", ...)
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self.metrics.watch_cache(enricher)
        self._loop_tick = time.monotonic()  # liveness: the loop's last turn
        self.paused_on: str | None = None  # the dependency consumption is paused on
        # Flushes run on one writer thread, in submission order (so a partition's
        # lake offsets advance in order); at most MAX_INFLIGHT wait, then consumption
        # pauses (backpressure). Kafka commits stay on this thread.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        # The batch just polled is decoded on one thread, and its LNP looked up in Redis
        # on another, while this thread rates the batch before it (see :meth:`run`).
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup")
        self._inflight: deque[Future[tuple[str, int, int] | None]] = deque()
        self._abort = threading.Event()
        self._writer_busy_since: float | None = None
        self.http: ObservabilityServer | None = None
        self._lag_at = float("-inf")
        self._start_offsets: dict[int, int] = {}  # partition -> offset it was assigned at

    @property
    def last_tick(self) -> float:
        """Liveness: the main loop's last turn, or the start of a write attempt still
        running (a hung write is a stall; a write retrying after an outage is not)."""
        busy = self._writer_busy_since
        return self._loop_tick if busy is None else min(self._loop_tick, busy)

    @last_tick.setter
    def last_tick(self, value: float) -> None:
        self._loop_tick = value

    # --------------------------------------------------------------- group membership
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            resume = self.lake.resume_offset(tp.topic, tp.partition)
            if resume is not None:
                tp.offset = resume
            self.buffers[tp.partition] = PartitionBuffer(tp.topic, tp.partition)
            self._start_offsets[tp.partition] = tp.offset
        consumer.assign(partitions)
        self.assigned = True
        LOG.info("assigned partitions=%s", [(tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            buffer = self.buffers.pop(tp.partition, None)
            if buffer is not None and not buffer.empty:
                self._submit(buffer)
        # The next owner must find every range we wrote committed, and no write of
        # ours may land after it starts: wait for the writer (abandoning retries).
        self._drain(REVOKE_DRAIN_S)
        consumer.unassign()
        self.assigned = False
        for tp in partitions:
            self._start_offsets.pop(tp.partition, None)
            self.lake.forget(tp.topic, tp.partition)
            self.stats.lag.pop(tp.partition, None)
        self.metrics.forget_partitions(self.settings.topic, [tp.partition for tp in partitions])
        LOG.info("revoked partitions=%s", [tp.partition for tp in partitions])

    # --------------------------------------------------------------- observability
    def serve_http(
        self,
        port: int,
        *,
        host: str | None = None,
        redis_ping: Callable[[], None] | None = None,
        liveness_s: float = 30.0,
    ) -> ObservabilityServer:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (default
        all interfaces) from now until :meth:`run` returns (or :meth:`close_http`).
        ``redis_ping`` raises :class:`ReferenceStoreError` when Redis is down
        (:func:`.health.redis_pinger`); without it readiness does not check Redis."""
        from pipeline.runtime.health import DEFAULT_HOST, ObservabilityServer, Probes

        self.close_http()
        probes = Probes(self, redis_ping, liveness_s=liveness_s)
        self.http = ObservabilityServer(self.metrics, probes, port, host or DEFAULT_HOST)
        return self.http

    def close_http(self) -> None:
        """Stop serving the HTTP endpoints (idempotent)."""
        if self.http is not None:
            self.http.stop()
            self.http = None

    def _maybe_update_lag(self, now: float) -> None:
        if now - self._lag_at >= LAG_INTERVAL_S:
            self._lag_at = now
            self._update_lag()

    def _update_lag(self) -> None:
        """Consumer lag per owned partition: cached high watermark minus position (the
        next offset the service will read); before the first message of a partition,
        minus the offset it was assigned at (or the low watermark). Partitions whose
        watermark is not known yet are left out."""
        try:
            assignment = self.consumer.assignment()
            if not assignment:
                return
            for tp in self.consumer.position(assignment):
                # documented to return None on timeout, though typed as a tuple
                marks: tuple[int, int] | None = self.consumer.get_watermark_offsets(tp, cached=True)
                if marks is None:
                    continue
                low, high = marks
                position = tp.offset
                if position < 0:
                    position = self._start_offsets.get(tp.partition, -1)
                if position < 0:
                    position = low
                if high < 0 or position < 0:
                    continue
                lag = max(high - position, 0)
                self.stats.lag[tp.partition] = lag
                self.metrics.set_lag(tp.topic, tp.partition, lag)
        except (KafkaException, RuntimeError) as exc:  # metrics must never stop the loop
            LOG.debug("consumer lag not computed: %s", exc)

    # --------------------------------------------------------------- main loop
    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: stop after flushing, committing and leaving the group."""

        def stop(signum: int, _frame: FrameType | None) -> None:
            LOG.info("signal=%d: stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> RunStats:
        """Consume until stopped (signal, :attr:`stopping`, or ``stop_when_idle``).

        Batches go through two halves: :meth:`_stage` (main thread: poll fields, then
        decoding handed to the decode thread, which hands the LNP lookup to the lookup
        thread) and :meth:`_complete` (main thread: rate, buffer). The batch polled now
        is decoded while the one before it waits for Redis and the one before that is
        rated, so the Redis round trip and the GIL-free parts of decoding overlap
        rating. One batch is staged at a time (two, with two decode threads, measured
        no better).
        """
        check_accounts_have_tariffs(self.enricher.snapshot(), self.tariffs)
        s = self.settings
        self.consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_message = time.monotonic()
        pending: _Batch | None = None  # polled and decoding while the previous one is rated
        try:
            while not self.stopping.is_set():
                self.last_tick = time.monotonic()
                messages = self.consumer.consume(s.batch.poll_max_messages, 0.2)
                now = time.monotonic()
                good = self._usable(messages)
                staged = None
                if good:
                    last_message = now
                    staged = self._stage(good)
                if pending is not None:
                    self._complete(pending)
                pending = staged
                now = time.monotonic()
                self._flush_due(now)
                self._maybe_update_lag(now)
                idle = time.monotonic() - last_message
                if s.stop_when_idle is not None and idle >= s.stop_when_idle and pending is None:
                    LOG.info("idle for %.1f s: stopping", idle)
                    break
            if pending is not None:  # a clean stop rates what was polled
                batch, pending = pending, None
                self._complete(batch)
        finally:
            try:
                self._shutdown()
            finally:
                self.close_http()
        return self.stats

    def _usable(self, messages: list[Message]) -> list[Message]:
        """The messages that carry data: partition-EOF events are dropped, other
        errors logged (and a fatal one raised as :class:`InfrastructureError`)."""
        if list(map(Message.error, messages)).count(None) == len(messages):
            return messages  # the usual case, found in C-level passes
        good = []
        for message in messages:
            err = message.error()
            if err is None:
                good.append(message)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise InfrastructureError(f"kafka: {err.str()}")
            else:
                LOG.warning("kafka error: %s", err.str())
        return good

    def _stage(self, messages: list[Message]) -> _Batch:
        """Main thread: the messages' fields, and their decoding handed to the decode
        thread."""
        started = time.perf_counter()
        n = len(messages)
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        batch = _Batch(
            started=started,
            values=list(map(Message.value, messages)),
            keys=_MessageKeys(messages),
            partitions=np.fromiter(map(Message.partition, messages), np.int32, n),
            offsets=np.fromiter(map(Message.offset, messages), np.int64, n),
            stamps=np.fromiter(map(_SECOND, map(Message.timestamp, messages)), np.int64, n),
            generation=self.generation,
        )
        batch.decoded = self._decoder.submit(self._decode, batch)
        batch.main_seconds = time.perf_counter() - started
        return batch

    def _decode(self, batch: _Batch) -> Decoded:
        """Decode thread: decode the batch, parse its numbers, and hand its LNP lookup
        to the lookup thread (so the next batch decodes while Redis answers). Raises
        :class:`InfrastructureError` when the schema registry is down."""
        sources = KafkaSources(self.settings.topic, batch.partitions, batch.offsets)
        events, dead = decode_batch(batch.values, sources, self.resolver, keys=batch.keys)
        numbers = parse_event_numbers(events)
        tns = origin_tns(events, numbers)
        batch.reference = self._lookup.submit(self.enricher.for_numbers, tns)
        return events, dead, numbers, tns

    def _prepared(self, batch: _Batch) -> tuple[Decoded, ReferenceData]:
        """Wait for the batch's decoding and reference data; after a failure (schema
        registry or Redis down), the next call retries the step that failed."""
        if batch.decoded is None:
            batch.decoded = self._decoder.submit(self._decode, batch)
        try:
            decoded = batch.decoded.result()
        except InfrastructureError:
            batch.decoded = None
            raise
        if batch.reference is None:
            batch.reference = self._lookup.submit(self.enricher.for_numbers, decoded[3])
        try:
            return decoded, batch.reference.result()
        except InfrastructureError:
            batch.reference = None
            raise

    def _complete(self, batch: _Batch) -> None:
        """Main thread: rate a decoded and enriched batch and add it to its partitions' buffers
        (pausing while the schema registry or Redis is down). A batch polled before
        an assignment change is dropped: its partitions resume from the lake."""
        started = time.perf_counter()
        (events, decode_dead, numbers, _), ref = self._retry(
            lambda: self._prepared(batch), "schema registry"
        )
        n = len(batch.values)
        if batch.generation != self.generation:
            LOG.info(
                "assignment changed during a batch: dropping %d in-flight messages (they will be re-read)",
                n,
            )
            return
        result = rate_batch(events, ref, self.tariffs, numbers)
        dead = pa.concat_tables([decode_dead, result.dead_letters])
        now = time.monotonic()
        partitions, offsets, stamps = batch.partitions, batch.offsets, batch.stamps
        rated_parts = _split_by_partition(result.rated)
        dead_parts = _split_by_partition(dead)
        order = np.argsort(partitions, kind="stable")
        bounds = np.flatnonzero(np.diff(partitions[order])) + 1
        for rows in np.split(order, bounds):
            p = int(partitions[rows[0]])
            buffer = self.buffers.get(p)
            if buffer is None:  # not ours any more
                continue
            buffer.add(
                rated_parts.get(p, _EMPTY_RATED),
                dead_parts.get(p, _EMPTY_DEAD),
                int(offsets[rows].min()),
                int(offsets[rows].max()),
                stamps[rows],
                now,
            )
        self.stats.consumed += n
        finished = time.perf_counter()
        self.stats.busy_seconds += batch.main_seconds + finished - started
        self.metrics.batch_processed(self.settings.topic, n, finished - batch.started)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                "batch topic=%s messages=%d rated=%d dead_letters=%d seconds=%.3f",
                self.settings.topic,
                n,
                result.rated.num_rows,
                dead.num_rows,
                finished - batch.started,
            )

    def _retry(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action``; on an infrastructure error pause consumption and retry with
        backoff until it succeeds or the service is stopped."""
        delay = 0.2
        paused: list[TopicPartition] | None = None
        try:
            while True:
                try:
                    return action()
                except InfrastructureError as exc:
                    if self.stopping.is_set():
                        raise
                    if paused is None:
                        paused = self.consumer.assignment()
                        if paused:
                            self.consumer.pause(paused)
                        kind = "redis" if isinstance(exc, ReferenceStoreError) else what
                        self.paused_on = kind
                        self.metrics.paused.set(1)
                        LOG.warning("%s unavailable, pausing consumption: %s", kind, exc)
                    self.consumer.poll(0)  # serve group callbacks while paused
                    self.last_tick = time.monotonic()  # paused is alive, not stuck
                    self._maybe_update_lag(self.last_tick)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if paused is not None:
                self.paused_on = None
                self.metrics.paused.set(0)
                assignment = self.consumer.assignment()
                if assignment:
                    self.consumer.resume(assignment)
                LOG.info("%s back: resuming consumption", what)

    # --------------------------------------------------------------- flushing
    def _flush_due(self, now: float) -> None:
        for buffer in list(self.buffers.values()):
            if buffer.due(self.settings.batch, now):
                self._submit(buffer)
        self._reap()
        if len(self._inflight) > MAX_INFLIGHT:
            self._backpressure()

    def _submit(self, buffer: PartitionBuffer) -> None:
        """Hand the buffer's range to the writer thread."""
        rated, dead, first, last, stamps = buffer.take()
        self._inflight.append(
            self._writer.submit(
                self._write_durably,
                buffer.topic,
                buffer.partition,
                rated,
                dead,
                first,
                last,
                stamps,
            )
        )

    def _write_durably(
        self,
        topic: str,
        partition: int,
        rated: pa.Table,
        dead: pa.Table,
        first: int,
        last: int,
        stamps: npt.NDArray[np.int64],
    ) -> tuple[str, int, int] | None:
        """Writer thread: :meth:`_write` until it succeeds, retrying infrastructure
        errors with backoff; ``None`` if abandoned (revocation or shutdown), in which
        case nothing of the range is committed and its next owner re-reads it."""
        delay, warned = 0.2, False
        while not self._abort.is_set():
            self._writer_busy_since = time.monotonic()
            try:
                self._write(topic, partition, rated, dead, first, last, stamps)
            except FencedError as exc:
                LOG.warning("dropping a flush another member owns now: %s", exc)
                self._fenced.add(partition)
                return None
            except InfrastructureError as exc:
                if not warned:
                    LOG.warning(
                        "lake or kafka unavailable, retrying partition=%d: %s", partition, exc
                    )
                    warned = True
                    self.paused_on = "lake or kafka"
                    self.metrics.paused.set(1)
            else:
                if warned:
                    self.paused_on = None
                    self.metrics.paused.set(0)
                    LOG.info("lake and kafka back: partition=%d written", partition)
                return (topic, partition, last)
            finally:
                self._writer_busy_since = None
            self._abort.wait(delay)
            delay = min(delay * 2, 5.0)
        return None

    def _reap(self) -> None:
        """Main thread: collect finished writes in order and commit their offsets to
        Kafka (for lag; the lake commit is the source of truth). A write that
        failed with a bug re-raises here."""
        while self._inflight and self._inflight[0].done():
            done = self._inflight.popleft().result()
            if done is None:
                continue
            topic, partition, last = done
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(topic, partition, last + 1)], asynchronous=True
                )
            except KafkaException as exc:
                LOG.warning("kafka offset commit failed partition=%d: %s", partition, exc)
        if self._fenced and not self._resyncing:
            fenced, self._fenced = self._fenced, set()
            if fenced & set(self.buffers):
                self._resync()

    def _resync(self) -> None:
        """Main thread: a commit of a partition still assigned here was fenced (a paused
        member committed it after this one was assigned it): re-read every assigned
        partition from the offsets the lake holds, as on a new assignment."""
        LOG.warning("lake offsets moved under this member: re-reading partitions from the lake")
        self._resyncing = True
        try:
            partitions = self.consumer.assignment()
            self._on_revoke(self.consumer, partitions)
            for tp in partitions:
                tp.offset = OFFSET_INVALID  # the Kafka commit, unless the lake holds one
            self._on_assign(self.consumer, partitions)
        finally:
            self._resyncing = False

    def _backpressure(self) -> None:
        """Too many writes waiting: pause consumption (serving group callbacks) until
        the writer catches up."""
        paused = self.consumer.assignment()
        if paused:
            self.consumer.pause(paused)
        try:
            while len(self._inflight) > MAX_INFLIGHT and not self.stopping.is_set():
                wait([self._inflight[0]], timeout=0.2)
                self._reap()
                self.consumer.poll(0)  # paused: no message, only callbacks
                self.last_tick = time.monotonic()
        finally:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)

    def _drain(self, timeout: float) -> None:
        """Wait for every submitted write; past ``timeout`` abandon the retrying ones
        (and wait for the attempt in progress) so no write lands afterwards."""
        if self._inflight:
            _, pending = wait(list(self._inflight), timeout=timeout)
            if pending:
                LOG.warning(
                    "abandoning %d write(s) still retrying; their ranges will be re-read",
                    len(pending),
                )
                self._abort.set()
                wait(list(self._inflight))
                self._abort.clear()
        self._reap()

    def _write(
        self,
        topic: str,
        p: int,
        rated: pa.Table,
        dead: pa.Table,
        first: int,
        last: int,
        stamps: npt.NDArray[np.int64],
    ) -> None:
        started = time.perf_counter()
        self._hook("flush:start", partition=p, first=first, last=last)
        self.dead_letters.send(dead)
        self._hook("flush:dead-letters-acked", partition=p, first=first, last=last)
        files = self.lake.commit_range(topic, p, rated, first, last)
        self._hook("flush:committed", partition=p, first=first, last=last)
        now_ms = int(time.time() * 1000)
        latencies_ms = now_ms - stamps
        seconds = time.perf_counter() - started
        self.stats.record_latencies(latencies_ms)
        by_reason = self.metrics.flushed(
            topic,
            p,
            last=last,
            rated=rated.num_rows,
            dead_reasons=dead.column("reason"),
            files=files,
            seconds=seconds,
            event_to_lake_s=latencies_ms / 1000.0,
        )
        self.stats.rated += rated.num_rows
        self.stats.dead_letters += dead.num_rows
        for reason, count in by_reason.items():
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + count
        self.stats.files += files
        self.stats.flushes += 1
        self.stats.last_flush_at = time.monotonic()
        self.stats.durable_offsets[p] = last
        LOG.info(
            "flushed topic=%s partition=%d offsets=%d-%d rated=%d dead_letters=%d files=%d seconds=%.3f",
            topic,
            p,
            first,
            last,
            rated.num_rows,
            dead.num_rows,
            files,
            seconds,
        )

    def _hook(self, point: str, **info: Any) -> None:
        if self.hook is not None:
            self.hook(point, info)

    def _shutdown(self) -> None:
        try:
            for buffer in list(self.buffers.values()):
                if not buffer.empty:
                    self._submit(buffer)
            self._drain(SHUTDOWN_DRAIN_S)
        finally:
            self._decoder.shutdown(wait=True, cancel_futures=True)
            self._lookup.shutdown(wait=True, cancel_futures=True)
            self._writer.shutdown(wait=True)
            self.consumer.close()  # leaves the group (revocation drains nothing more)
            self.assigned = False
            LOG.info(
                "stopped consumed=%d rated=%d dead_letters=%d files=%d",
                self.stats.consumed,
                self.stats.rated,
                self.stats.dead_letters,
                self.stats.files,
            )
