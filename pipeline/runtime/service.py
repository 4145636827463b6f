"""``cdr-pipeline run``: the streaming service, a consumer-group member.

The loop only moves batches between its parts:

* :mod:`.staging`: a polled batch is decoded on the decode thread and enriched on the
  lookup thread while the main thread rates the batch polled before it;
* :func:`~pipeline.rating.rate.rate_batch` (the pure core) rates it, and the results
  go to per-partition buffers (:mod:`.buffer`);
* :mod:`.committer`: a due buffer is flushed on the writer thread (dead letters
  acknowledged, then the lake commit of records and offset), and the Kafka offset is
  committed back on the main thread;
* :mod:`.pausing`: dependency outages (schema registry, Redis, the lake, Kafka) and
  backpressure pause consumption and retry; they never turn data into dead letters.

Group membership: on assignment a partition resumes after the last offset the lake
holds (:meth:`~.ports.LakeTable.resume_offset`); on revocation its buffer is flushed
first and the writer drained. A *lost* partition (the member's session timed out, e.g.
during a broker freeze: another member may own it already) is not flushed: its buffer
is dropped, writes not yet in progress are abandoned and nothing of it is committed
to Kafka; whoever owns it reads the range again from the lake's offset. Every
assignment change bumps :attr:`generation`: a batch polled under an older one is
dropped (its partitions resume from the lake, so its messages are read again by
whoever owns them now).

Each change is logged with counts (``assigned count=N``, ``revoked count=N``,
``lost count=N``). Partitions that come back to this member are logged with how long
they were away (``partitions=[3] reassigned after 7.2 s``, one line per duration),
and an assignment that lacks some of the partitions revoked or lost just before says
which (``not reassigned to this member: [3]``): after a freeze, the partition that
stays away longer than the others shows in the log.

Everything with I/O is injected (:mod:`.ports`): :func:`pipeline.streaming.build_service`
builds the real consumer, dead-letter producer, lake and enricher; unit tests use
in-memory fakes (``tests/unit/fakes.py``).

Observability: :attr:`metrics` (:mod:`pipeline.metrics`) is updated once per batch and
once per flush; :attr:`stats` (:class:`~.stats.RunStats`) also holds the per-stage
seconds (``stage_seconds``, the profiling hook point); lag comes from :mod:`.lag`.
:meth:`serve_http` exposes ``/metrics``, ``/healthz`` and ``/readyz`` (:mod:`.health`);
:attr:`last_tick`, :attr:`assigned` and :attr:`paused_on` are what the probes read.

Hook points (``hook(point, info)``, the test seam): ``group:assigned``,
``group:revoked`` and ``group:lost`` (``info["partitions"]``), and the flush points of
:mod:`.committer` (``flush:start``, ``flush:dead-letters-acked``, ``flush:committed``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from confluent_kafka import OFFSET_INVALID, KafkaError, Message, TopicPartition

from pipeline.errors import InfrastructureError
from pipeline.io.wire import SchemaResolver
from pipeline.metrics import ServiceMetrics
from pipeline.rating.compiled import check_accounts_have_tariffs
from pipeline.rating.rate import rate_batch
from pipeline.rating.tariffs import TariffBook
from pipeline.runtime.buffer import Buffers
from pipeline.runtime.committer import LakeCommitter
from pipeline.runtime.enrich import Enricher
from pipeline.runtime.lag import LagMonitor
from pipeline.runtime.pausing import Pausing
from pipeline.runtime.ports import DeadLetterSink, GroupConsumer, Hook, LakeTable
from pipeline.runtime.staging import StagedBatch, Staging
from pipeline.runtime.stats import RunStats, StageClock
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.runtime.health import ObservabilityServer

__all__ = ["REVOKE_DRAIN_S", "SHUTDOWN_DRAIN_S", "Hook", "RunStats", "StreamingService"]

LOG = logging.getLogger(__name__)

#: How long a revocation waits for pending writes before abandoning their retries.
REVOKE_DRAIN_S = 30.0
#: How long a clean stop waits for pending writes (e.g. during an outage).
SHUTDOWN_DRAIN_S = 60.0
#: Longest wait of one ``consume`` call for messages (seconds).
POLL_TIMEOUT_S = 0.2


class StreamingService:
    """One consumer-group member. Construct, then :meth:`run` until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: GroupConsumer,
        dead_letters: DeadLetterSink,
        lake: LakeTable,
        enricher: Enricher,
        tariffs: TariffBook,
        resolver: SchemaResolver,
        hook: Hook | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.enricher = enricher
        self.tariffs = tariffs
        self.hook = hook
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self.metrics.watch_cache(enricher)
        self.stats = RunStats()
        self.stopping = threading.Event()
        self.generation = 0  # bumped on every assignment change
        self.assigned = False
        self._ever_assigned = False  # set by the first assignment (see _waiting)
        self.http: ObservabilityServer | None = None
        self._loop_tick = time.monotonic()  # liveness: the loop's last turn
        self._unassigned_at: dict[int, float] = {}  # partition -> revoked or lost at
        self._last_unassigned: list[int] = []  # of the last revocation or loss
        stages = StageClock(self.stats, self.metrics)
        self.stages = stages
        self.lag = LagMonitor(consumer, settings.topic, self.stats, self.metrics)
        self.pausing = Pausing(consumer, self.metrics, stages, on_wait=self._paused_turn)
        self.buffers = Buffers()
        self.staging = Staging(settings.topic, resolver, enricher.for_numbers, stages)
        self.committer = LakeCommitter(
            lake=lake,
            dead_letters=dead_letters,
            consumer=consumer,
            pausing=self.pausing,
            stats=self.stats,
            metrics=self.metrics,
            stages=stages,
            hook=hook,
        )

    # --------------------------------------------------------------- probes
    @property
    def last_tick(self) -> float:
        """Liveness: the main loop's last turn, or the start of a write attempt still
        running (a hung write is a stall; a write retrying after an outage is not)."""
        busy = self.committer.busy_since
        return self._loop_tick if busy is None else min(self._loop_tick, busy)

    @last_tick.setter
    def last_tick(self, value: float) -> None:
        self._loop_tick = value

    @property
    def paused_on(self) -> str | None:
        """The dependency consumption is paused on (``"redis"``, ...), else None."""
        return self.pausing.paused_on

    def _paused_turn(self) -> None:
        """A turn spent paused: alive, not stuck; lag still reported."""
        self.last_tick = time.monotonic()
        self.lag.maybe_update(self.last_tick)

    # --------------------------------------------------------------- group membership
    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            resume = self.committer.resume_offset(tp.topic, tp.partition)
            if resume is not None:
                tp.offset = resume
            self.buffers.open(tp.topic, tp.partition)
            self.lag.assigned(tp.partition, tp.offset)
        self.consumer.assign(partitions)
        self.pausing.assigned(partitions)
        self.assigned = True
        self._ever_assigned = True
        numbers = [tp.partition for tp in partitions]
        LOG.info(
            "assigned count=%d partitions=%s",
            len(partitions),
            [(tp.partition, tp.offset) for tp in partitions],
        )
        now = time.monotonic()
        back: dict[str, list[int]] = {}  # "7.2" -> the partitions away that long
        for p in numbers:
            since = self._unassigned_at.pop(p, None)
            if since is not None:
                back.setdefault(f"{now - since:.1f}", []).append(p)
        for seconds, group in sorted(back.items(), key=lambda kv: float(kv[0])):
            LOG.info("partitions=%s reassigned after %s s", group, seconds)
        missing = sorted(set(self._last_unassigned) - set(numbers))
        if missing:
            LOG.info(
                "not reassigned to this member: %s (unassigned %.1f s ago; another member "
                "may hold them)",
                missing,
                now - max(self._unassigned_at.get(p, now) for p in missing),
            )
        self._last_unassigned = []
        self._hook("group:assigned", partitions=numbers)

    def _unassigned(self, partitions: list[int]) -> None:
        """Bookkeeping shared by revocation and loss."""
        self.consumer.unassign()
        self.assigned = False
        self.lag.forget(partitions)
        now = time.monotonic()
        self._unassigned_at.update(dict.fromkeys(partitions, now))
        self._last_unassigned = list(partitions)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        for tp in partitions:
            buffer = self.buffers.pop(tp.partition)
            if buffer is not None and not buffer.empty:
                self.committer.submit(buffer)
        # The next owner must find every range we wrote committed, and no write of
        # ours may land after it starts: wait for the writer (abandoning retries).
        self.committer.drain(REVOKE_DRAIN_S)
        # Ranges fenced until now need no re-sync: what is assigned next resumes from the lake.
        self.committer.take_fenced()
        numbers = [tp.partition for tp in partitions]
        self._unassigned(numbers)
        LOG.info("revoked count=%d partitions=%s", len(numbers), numbers)
        self._hook("group:revoked", partitions=numbers)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost: not flushed, nothing committed (see the module docstring)."""
        self.generation += 1  # the batch staged now is dropped too
        numbers = [tp.partition for tp in partitions]
        dropped = 0
        for p in numbers:
            buffer = self.buffers.pop(p)
            if buffer is not None:
                dropped += buffer.rows
        abandoned = self.committer.abandon(frozenset(numbers))
        self.committer.take_fenced()  # as on revocation: the next assignment resumes from the lake
        self._unassigned(numbers)
        LOG.warning(
            "lost count=%d partitions=%s (session timed out; another member may own them): "
            "dropped buffered records=%d, abandoned writes=%d, nothing committed; their "
            "owner reads them again from the lake's offsets",
            len(numbers),
            numbers,
            dropped,
            abandoned,
        )
        self._hook("group:lost", partitions=numbers)

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

        ``stop_when_idle`` (seconds): stop once that long has passed with nothing to do:
        no message consumed, no batch staged, no write in flight, the assignment held
        and not paused. Time paused on a dependency outage or on backpressure never
        counts (the idle clock restarts when consumption resumes: after a pause
        librdkafka fetches afresh, so the first polls come back empty). Whether the
        consumer has reached the end of its partitions is not asked: the broker's high
        watermark can trail the last batch, so it proves nothing either way.

        Each turn: poll, stage the new batch (its decoding starts on the decode
        thread), rate and buffer the batch staged on the turn before, submit due
        buffers. One batch is staged ahead (two, with two decode threads, measured no
        better).
        """
        check_accounts_have_tariffs(self.enricher.snapshot(), self.tariffs)
        s = self.settings
        self.consumer.subscribe(
            [s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        idle_since = time.monotonic()
        pending: StagedBatch | None = None  # staged on the turn before, decoding
        try:
            while not self.stopping.is_set():
                self.last_tick = time.monotonic()
                messages = self._consume(s.batch.poll_max_messages)
                now = time.monotonic()
                good = self._usable(messages)
                staged = None
                if good:
                    if self.stats.first_message_at is None:
                        self.stats.first_message_at = now
                    staged = self.staging.stage(good, self.generation)
                if pending is not None:
                    self._complete(pending)
                pending = staged
                now = time.monotonic()
                self._flush_due(now)
                self.lag.maybe_update(now)
                now = time.monotonic()
                if good or pending is not None or self._waiting():
                    idle_since = now
                idle_since = max(idle_since, self.pausing.resumed_at)
                if s.stop_when_idle is not None and now - idle_since >= s.stop_when_idle:
                    LOG.info(
                        "idle for %.1f s (nothing consumed, staged or in flight, not paused): "
                        "stopping",
                        now - idle_since,
                    )
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

    def _waiting(self) -> bool:
        """Not idle though nothing came: waiting for the group's first assignment, for a
        dependency (an outage, backpressure) or for writes in flight.
        ``stop_when_idle`` counts only time that is none of these. Time without an
        assignment after a first one counts as idle: a member the group leaves without
        partitions (or whose rebalance does not complete) still stops."""
        joining = not self.assigned and not self._ever_assigned
        return joining or self.pausing.paused or self.committer.in_flight > 0

    def _consume(self, most: int) -> list[Message]:
        started = time.perf_counter()
        messages = self.consumer.consume(most, POLL_TIMEOUT_S)
        self.pausing.settle()  # partitions assigned by the callbacks of this call
        stage = "main:consume" if messages else "main:consume_idle"
        self.stages.add(stage, time.perf_counter() - started)
        return messages

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

    def _complete(self, batch: StagedBatch) -> None:
        """Main thread: rate a decoded and enriched batch and add it to its partitions'
        buffers (pausing while the schema registry or Redis is down). A batch polled
        before an assignment change is dropped: its partitions resume from the lake."""
        started = time.perf_counter()
        decoded, ref = self.pausing.retry(
            lambda: self.staging.prepared(batch), stopping=self.stopping
        )
        if batch.generation != self.generation:
            LOG.info(
                "assignment changed during a batch: dropping %d in-flight messages (they will be re-read)",
                batch.size,
            )
            return
        with self.stages.timing("main:rate"):
            result = rate_batch(decoded.events, ref, self.tariffs, decoded.numbers)
        with self.stages.timing("main:buffer"):
            dead = pa.concat_tables([decoded.dead, result.dead_letters])
            self.buffers.add_batch(
                batch.partitions, batch.offsets, batch.stamps, result.rated, dead, time.monotonic()
            )
        self.stats.consumed += batch.size
        finished = time.perf_counter()
        self.stats.busy_seconds += batch.main_seconds + finished - started
        self.metrics.batch_processed(self.settings.topic, batch.size, finished - batch.started)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                "batch topic=%s messages=%d rated=%d dead_letters=%d seconds=%.3f",
                self.settings.topic,
                batch.size,
                result.rated.num_rows,
                dead.num_rows,
                finished - batch.started,
            )

    def _flush_due(self, now: float) -> None:
        """Submit the due buffers, commit what is durable; too many writes waiting:
        pause until the writer catches up (backpressure)."""
        with self.stages.timing("main:flush"):
            for buffer in self.buffers.due(self.settings.batch, now):
                self.committer.submit(buffer)
            self.committer.reap()
        fenced = self.committer.take_fenced()
        if fenced:
            self._resync(fenced)
        if self.committer.backlogged:
            self.pausing.hold(
                lambda: self.committer.backlogged,
                self.committer.wait_and_reap,
                stopping=self.stopping,
            )

    def _resync(self, fenced: set[tuple[str, int]]) -> None:
        """The lake refused ranges of ``fenced`` partitions: another member committed
        them (this one was paused past its session timeout and the group moved on).
        Re-read every partition still assigned here from the offsets the lake holds:
        revoke our own assignment (flush and drain what is buffered; later ranges of a
        fenced partition are refused too) and assign it again, so no offset is skipped
        and none lands twice. If the partitions are gone, the group's own revocation
        follows."""
        assignment = self.consumer.assignment()
        LOG.warning(
            "lake refused ranges of partitions=%s (another member committed them): "
            "re-reading partitions=%s from the lake",
            sorted(p for _, p in fenced),
            sorted(tp.partition for tp in assignment),
        )
        if not assignment:
            return
        self._on_revoke(self.consumer, assignment)  # ranges refused while draining: re-read below
        for tp in assignment:
            tp.offset = OFFSET_INVALID  # the lake's offset, else the group's committed one
        self._on_assign(self.consumer, assignment)

    def _hook(self, point: str, **info: Any) -> None:
        if self.hook is not None:
            self.hook(point, info)

    def _shutdown(self) -> None:
        try:
            for buffer in self.buffers.nonempty():
                self.committer.submit(buffer)
            self.committer.drain(SHUTDOWN_DRAIN_S)
        finally:
            self.staging.close()
            self.committer.close()
            self.consumer.close()  # leaves the group (revocation drains nothing more)
            self.assigned = False
            LOG.info(
                "stopped consumed=%d rated=%d dead_letters=%d files=%d",
                self.stats.consumed,
                self.stats.rated,
                self.stats.dead_letters,
                self.stats.files,
            )
