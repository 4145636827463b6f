"""The lake committer: due ranges made durable in the flush order, on one writer thread.

A range (:class:`~pipeline.runtime.ports.Flush`) submitted by the main thread is
written by the writer thread, in submission order (so a partition's durable offset
only moves forward), overlapping the rating of the next batches:

1. its dead letters are produced and acknowledged (:class:`~.ports.DeadLetterSink`);
2. the lake commits its rated records and its last offset
   (:meth:`~.ports.LakeTable.commit`: one Delta commit, :mod:`pipeline.lake.partitions`);
3. back on the main thread (:meth:`LakeCommitter.reap`), the Kafka offset
   ``last + 1`` is committed (for lag; the lake is the source of truth).

A step that fails with an infrastructure error is retried by the pause policy
(:meth:`~.pausing.Pausing.retry_writer`) from step 1 (dead letters are keyed by
source offset, so a letter sent twice is exported once). At most :data:`MAX_INFLIGHT`
ranges wait; past that the main thread pauses consumption (:attr:`backlogged`). On
revocation and at stop the main thread :meth:`drain`\\ s: it waits for every range,
and past its timeout abandons the ones still retrying, so that no write of this
member lands after the partition's next owner has started; an abandoned range is not
committed and is re-read by that owner. On the loss of partitions (the session timed
out: another member may own them already) it does not wait: :meth:`abandon` stops
every write not in progress and commits nothing of them to Kafka.

Hook points (the test seam, ``hook(point, {"partition", "first", "last"})``):
``flush:start``, ``flush:dead-letters-acked``, then ``flush:<step>`` for each mark of
the lake (``flush:committed``).

A range the lake refuses because another member committed the partition
(:class:`~pipeline.errors.FencedError`) is dropped, never retried, and reported by
:meth:`LakeCommitter.take_fenced` so the service re-syncs the partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition

from pipeline.errors import FencedError
from pipeline.metrics import ServiceMetrics
from pipeline.runtime.buffer import PartitionBuffer
from pipeline.runtime.pausing import Pausing
from pipeline.runtime.ports import DeadLetterSink, Flush, GroupConsumer, Hook, LakeTable
from pipeline.runtime.stats import RunStats, StageClock

LOG = logging.getLogger(__name__)

#: Writes that may wait for the writer thread before consumption pauses.
MAX_INFLIGHT = 2

#: A range made durable: topic, partition, last offset.
Durable = tuple[str, int, int]


@dataclass(kw_only=True, eq=False)
class LakeCommitter:
    """Flushes of one service (see the module docstring)."""

    lake: LakeTable
    dead_letters: DeadLetterSink
    consumer: GroupConsumer
    pausing: Pausing
    stats: RunStats
    metrics: ServiceMetrics
    stages: StageClock
    hook: Hook | None = None
    max_inflight: int = MAX_INFLIGHT
    #: ``time.monotonic()`` at the start of the write attempt in progress, else None.
    busy_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        self._inflight: deque[Future[Durable | None]] = deque()
        self._abort = threading.Event()
        self._fenced: set[tuple[str, int]] = set()  # written by the writer thread

    def take_fenced(self) -> set[tuple[str, int]]:
        """Main thread: the (topic, partition)s whose ranges the lake refused since the
        last call (:class:`~pipeline.errors.FencedError`: another member committed
        them). Their refused ranges were dropped; the caller re-syncs the partitions
        it still owns from the lake."""
        fenced, self._fenced = self._fenced, set()
        return fenced

    # ------------------------------------------------------------------ main thread
    def resume_offset(self, topic: str, partition: int) -> int | None:
        """Where a newly assigned partition resumes (see :class:`~.ports.LakeTable`)."""
        return self.lake.resume_offset(topic, partition)

    def submit(self, buffer: PartitionBuffer) -> None:
        """Hand the buffer's range to the writer thread (the buffer is emptied)."""
        rated, dead, first, last, stamps = buffer.take()
        flush = Flush(buffer.topic, buffer.partition, first, last, rated, dead, stamps)
        self._inflight.append(self._writer.submit(self._write_durably, flush))

    @property
    def in_flight(self) -> int:
        """Ranges submitted and not reaped yet (being written, retried or done)."""
        return len(self._inflight)

    @property
    def backlogged(self) -> bool:
        """More ranges wait for the writer than may: consumption should pause."""
        return len(self._inflight) > self.max_inflight

    def wait_and_reap(self, timeout: float = 0.2) -> None:
        """Wait up to ``timeout`` for the oldest range, then :meth:`reap`."""
        if self._inflight:
            wait([self._inflight[0]], timeout=timeout)
        self.reap()

    def reap(self, *, lost: frozenset[int] = frozenset()) -> None:
        """Collect finished ranges in order and commit their offsets to Kafka (except
        those of ``lost`` partitions). A write that failed with a bug re-raises here."""
        while self._inflight and self._inflight[0].done():
            done = self._inflight.popleft().result()
            if done is None:
                continue
            topic, partition, last = done
            if partition in lost:
                continue
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(topic, partition, last + 1)], asynchronous=True
                )
            except KafkaException as exc:
                LOG.warning("kafka offset commit failed partition=%d: %s", partition, exc)

    def drain(self, timeout: float) -> None:
        """Wait for every submitted range; past ``timeout`` abandon the retrying ones
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
        self.reap()

    def abandon(self, lost: frozenset[int]) -> int:
        """Partitions ``lost`` (another member may own them already): stop every write
        still queued or retrying (an attempt in progress cannot be stopped: it is
        waited for), commit nothing of the lost partitions to Kafka. Writes of other
        partitions abandoned with them are re-read from the lake's offsets. Returns
        how many writes were abandoned."""
        abandoned = 0
        if self._inflight:
            self._abort.set()
            wait(list(self._inflight))
            self._abort.clear()
            abandoned = sum(
                1 for f in self._inflight if f.exception() is None and f.result() is None
            )
        self.reap(lost=lost)
        return abandoned

    def close(self) -> None:
        """Stop the writer thread (after :meth:`drain`)."""
        self._writer.shutdown(wait=True)

    # ------------------------------------------------------------------ writer thread
    def _write_durably(self, flush: Flush) -> Durable | None:
        """The range written, retried until it is durable; ``None`` if abandoned, or if
        the lake fenced it (never retried: another member owns the partition now)."""
        try:
            return self.pausing.retry_writer(
                lambda: self._attempt(flush),
                abort=self._abort,
                what=f"partition={flush.partition}",
            )
        except FencedError as exc:
            LOG.warning(
                "fenced topic=%s partition=%d offsets=%d-%d: dropped, not committed (%s)",
                flush.topic,
                flush.partition,
                flush.first,
                flush.last,
                exc,
            )
            self.metrics.fenced.labels(flush.topic, str(flush.partition)).inc()
            self._fenced.add((flush.topic, flush.partition))
            return None

    def _attempt(self, flush: Flush) -> Durable:
        self.busy_since = time.monotonic()
        try:
            self._write(flush)
        finally:
            self.busy_since = None
        return (flush.topic, flush.partition, flush.last)

    def _write(self, flush: Flush) -> None:
        started = time.perf_counter()
        step_started = started
        info = {"partition": flush.partition, "first": flush.first, "last": flush.last}

        def mark(step: str) -> None:
            nonlocal step_started
            now = time.perf_counter()
            self.stages.add(f"writer:{step}", now - step_started)
            step_started = now
            if self.hook is not None:
                self.hook(f"flush:{step}", dict(info))

        if self.hook is not None:
            self.hook("flush:start", dict(info))
        self.dead_letters.send(flush.dead)
        mark("dead-letters-acked")
        files = self.lake.commit(flush, mark)
        self._record(flush, files, time.perf_counter() - started)
        self.stages.add("writer:other", time.perf_counter() - step_started)

    def _record(self, flush: Flush, files: int, seconds: float) -> None:
        """Statistics, metrics and the ``flushed`` log line of a durable range."""
        latencies_ms = int(time.time() * 1000) - flush.stamps
        by_reason = self.metrics.flushed(
            flush.topic,
            flush.partition,
            last=flush.last,
            rated=flush.rated.num_rows,
            dead_reasons=flush.dead.column("reason"),
            files=files,
            seconds=seconds,
            event_to_lake_s=latencies_ms / 1000.0,
        )
        self.stats.flushed(
            flush.partition,
            flush.last,
            rated=flush.rated.num_rows,
            dead_letters=flush.dead.num_rows,
            by_reason=by_reason,
            files=files,
            latencies_ms=latencies_ms,
        )
        LOG.info(
            "flushed topic=%s partition=%d offsets=%d-%d rated=%d dead_letters=%d files=%d seconds=%.3f",
            flush.topic,
            flush.partition,
            flush.first,
            flush.last,
            flush.rated.num_rows,
            flush.dead.num_rows,
            files,
            seconds,
        )
