"""One retry and pause policy for the streaming service.

Three things stop the service taking new messages, and all go through :class:`Pausing`:

* **a dependency outage on the main thread** (the schema registry while a batch is
  decoded, Redis while it is enriched): :meth:`Pausing.retry` pauses the consumer's
  assignment and retries the step with back-off until it succeeds;
* **a dependency outage on the writer thread** (the lake, Kafka for dead letters):
  :meth:`Pausing.retry_writer` retries the flush with the same back-off. The writer
  never calls the consumer (every Kafka call stays on the main thread): consumption
  pauses by backpressure once writes queue up behind the failing one;
* **backpressure**: :meth:`Pausing.hold` pauses the assignment until the writer has
  caught up.

Back-off: 0.2 s, doubling, at most 5 s. While paused the main thread keeps serving
group callbacks (``poll(0)`` on a paused assignment returns no message) and ticking
liveness. Partitions assigned while paused are paused at once
(:meth:`Pausing.assigned`): a ``poll`` would otherwise return one of their messages,
which nothing buffers.

Each outage has a *cause* (:func:`cause_of`: ``redis``, ``schema registry``,
``lake``, ``kafka``) and a start. The log says ``<cause> unavailable, pausing
consumption: <error>`` when one starts and ``<cause> back after <s> s: resuming
consumption`` when it ends (on the writer thread: ``..., retrying partition=P`` and
``... partition=P written``); a backpressure pause ends with ``backpressure over
after <s> s: resuming consumption`` (INFO from :data:`BACKPRESSURE_LOG_S` or when a
writer outage caused it, else DEBUG: it is routine at full speed). :attr:`Pausing.paused_on` (the readiness probe) and the
``cdr_consumption_paused`` gauge follow the outages in progress. Outages never turn
data into dead letters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TypeVar

from confluent_kafka import TopicPartition

from pipeline.errors import BrokerError, InfrastructureError, ReferenceStoreError, SinkError
from pipeline.io.wire import SchemaRegistryError
from pipeline.metrics import ServiceMetrics
from pipeline.runtime.ports import GroupConsumer
from pipeline.runtime.stats import StageClock

LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: First and longest wait between two attempts (seconds).
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0
#: A backpressure pause at least this long is logged at INFO (shorter ones at DEBUG:
#: at full speed they are routine).
BACKPRESSURE_LOG_S = 1.0

_CAUSES: tuple[tuple[type[InfrastructureError], str], ...] = (
    (ReferenceStoreError, "redis"),
    (SchemaRegistryError, "schema registry"),
    (SinkError, "lake"),
    (BrokerError, "kafka"),
)


def cause_of(exc: InfrastructureError) -> str:
    """The dependency an infrastructure error stands for, as operators name it."""
    for kind, name in _CAUSES:
        if isinstance(exc, kind):
            return name
    return "a dependency"


class Backoff:
    """Delays between attempts: ``first``, doubling, at most ``longest``."""

    def __init__(self, first: float = FIRST_DELAY_S, longest: float = MAX_DELAY_S) -> None:
        self._next = first
        self._longest = longest

    def next(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self._longest)
        return delay


@dataclass
class Outage:
    """A dependency outage in progress: its cause and when it (and the pause) began."""

    cause: str
    since: float
    paused_since: float


#: Where an outage is retried: the main thread (consumption paused) or the writer.
MAIN, WRITER = "main", "writer"


@dataclass(eq=False)
class Pausing:
    """The retry/back-off and pause policy of one service (see the module docstring).

    ``on_wait`` is called on every turn spent paused on the main thread (the service
    ticks liveness and refreshes lag there). ``clock`` times outages.
    """

    consumer: GroupConsumer
    metrics: ServiceMetrics
    stages: StageClock
    _: KW_ONLY
    on_wait: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    first_delay: float = FIRST_DELAY_S
    max_delay: float = MAX_DELAY_S

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._outages: dict[str, Outage] = {}
        self._holds = 0  # main thread only: pauses of the assignment in force
        #: Partitions assigned while no hold was on, to resume once the rebalance
        #: callback has returned (:meth:`settle`).
        self._to_resume: list[TopicPartition] = []
        #: ``clock()`` when the last pause of the assignment ended (main thread); the
        #: idle clock of ``stop_when_idle`` restarts there (a pause is never idleness).
        self.resumed_at = float("-inf")

    # ------------------------------------------------------------------ state
    @property
    def paused_on(self) -> str | None:
        """The dependency consumption is paused on (main thread's first), else None."""
        with self._lock:
            outage = self._outages.get(MAIN) or self._outages.get(WRITER)
            return outage.cause if outage is not None else None

    @property
    def holding(self) -> bool:
        """True while the assignment is paused (main thread)."""
        return self._holds > 0

    @property
    def paused(self) -> bool:
        """True while the assignment is paused or a dependency outage is in progress
        (on either thread): the service is waiting, not idle."""
        with self._lock:
            return self._holds > 0 or bool(self._outages)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Main thread, in the assignment callback right after ``assign``: new partitions
        are paused while the assignment is; otherwise they are explicitly resumed by
        :meth:`settle` once the callback has returned. librdkafka keeps a partition's
        pause across unassign and assign (one paused by a hold that a lost session
        interrupted was never fetched again), and a ``resume`` made inside the rebalance
        callback itself intermittently left an error pending in the client (a
        ``SystemError`` in the next call)."""
        if not partitions:
            return
        if self._holds:
            self.consumer.pause(partitions)
        else:
            self._to_resume.extend(TopicPartition(tp.topic, tp.partition) for tp in partitions)

    def settle(self) -> None:
        """Main thread, after ``consume``/``poll`` returned: resume the partitions
        :meth:`assigned` left for it (those still assigned), unless a hold is on."""
        if not self._to_resume or self._holds:
            return
        pending, self._to_resume = self._to_resume, []
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        resume = [tp for tp in pending if (tp.topic, tp.partition) in owned]
        if resume:
            self.consumer.resume(resume)

    # ------------------------------------------------------------------ policies
    def retry(
        self,
        action: Callable[[], T],
        *,
        stopping: threading.Event,
        cause: Callable[[InfrastructureError], str] = cause_of,
    ) -> T:
        """Main thread: ``action()``; on an :class:`InfrastructureError` pause the
        assignment and retry with back-off until it succeeds (then resume) or the
        service is stopping (then the error is raised)."""
        backoff = Backoff(self.first_delay, self.max_delay)
        try:
            while True:
                try:
                    return action()
                except InfrastructureError as exc:
                    if stopping.is_set():
                        raise
                    if self._begin(MAIN, cause(exc), exc, "pausing consumption"):
                        self._pause()
                    self._serve()
                    stopping.wait(backoff.next())
        finally:
            outage = self._end(MAIN)
            if outage is not None:
                self._resume()
                self.stages.add("main:paused", self.clock() - outage.paused_since)
                self._log_back(outage, "resuming consumption")

    def retry_writer(
        self,
        action: Callable[[], T],
        *,
        abort: threading.Event,
        what: str,
        cause: Callable[[InfrastructureError], str] = cause_of,
    ) -> T | None:
        """Writer thread: ``action()`` until it succeeds, retrying infrastructure errors
        with back-off (never touching the consumer); ``None`` once ``abort`` is set.
        ``what`` names the work in the log (``partition=3``)."""
        backoff = Backoff(self.first_delay, self.max_delay)
        done = False
        try:
            while not abort.is_set():
                try:
                    result = action()
                except InfrastructureError as exc:
                    self._begin(WRITER, cause(exc), exc, f"retrying {what}")
                    abort.wait(backoff.next())
                else:
                    done = True
                    return result
            return None
        finally:
            outage = self._end(WRITER)
            if outage is not None:
                if done:
                    self._log_back(outage, f"{what} written")
                else:
                    LOG.warning(
                        "%s still unavailable after %.1f s: %s abandoned, to be re-read",
                        outage.cause,
                        self.clock() - outage.since,
                        what,
                    )

    def hold(
        self,
        busy: Callable[[], bool],
        step: Callable[[], None],
        *,
        stopping: threading.Event,
    ) -> None:
        """Main thread: pause the assignment while ``busy()``, calling ``step()`` (which
        waits a little) and serving group callbacks on every turn (backpressure)."""
        started = self.clock()
        causes: list[str] = []  # writer outages seen while holding
        self._pause()
        try:
            while busy() and not stopping.is_set():
                step()
                self._serve()
                with self._lock:
                    writer = self._outages.get(WRITER)
                if writer is not None and writer.cause not in causes:
                    causes.append(writer.cause)
        finally:
            self._resume()
            held = self.clock() - started
            self.stages.add("main:backpressure", held)
            # routine at full speed (DEBUG); worth a line when long or due to an outage
            level = logging.INFO if causes or held >= BACKPRESSURE_LOG_S else logging.DEBUG
            LOG.log(
                level,
                "backpressure over after %.2f s: resuming consumption (the lake writer caught "
                "up%s)",
                held,
                f"; {', '.join(causes)} unavailable meanwhile" if causes else "",
            )

    # ------------------------------------------------------------------ internals
    def _begin(self, where: str, cause: str, exc: InfrastructureError, doing: str) -> bool:
        """Record an outage at ``where`` (a new one, or a new cause of the one in
        progress), logging it; True when consumption was not paused for one yet."""
        now = self.clock()
        with self._lock:
            current = self._outages.get(where)
            if current is not None and current.cause == cause:
                return False
            paused_since = current.paused_since if current is not None else now
            self._outages[where] = Outage(cause, now, paused_since)
            self.metrics.paused.set(1)
        LOG.warning("%s unavailable, %s: %s", cause, doing, exc)
        return current is None

    def _end(self, where: str) -> Outage | None:
        with self._lock:
            outage = self._outages.pop(where, None)
            if not self._outages:
                self.metrics.paused.set(0)
        return outage

    def _log_back(self, outage: Outage, doing: str) -> None:
        now = self.clock()
        if outage.paused_since < outage.since:
            LOG.info(
                "%s back after %.1f s (paused %.1f s in all): %s",
                outage.cause,
                now - outage.since,
                now - outage.paused_since,
                doing,
            )
        else:
            LOG.info("%s back after %.1f s: %s", outage.cause, now - outage.since, doing)

    def _pause(self) -> None:
        if self._holds == 0:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
        self._holds += 1

    def _resume(self) -> None:
        self._holds -= 1
        self.resumed_at = self.clock()
        if self._holds == 0:
            self._to_resume.clear()  # the whole assignment is resumed here
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)

    def _serve(self) -> None:
        """One turn while paused: group callbacks (no message should come: if one does,
        the consumer is rewound to it so it is read again after the pause)."""
        message = self.consumer.poll(0)
        if message is not None and message.error() is None:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is not None and partition is not None and offset is not None:
                LOG.warning(
                    "a message arrived while paused (partition=%d offset=%d): rewinding",
                    partition,
                    offset,
                )
                self.consumer.seek(TopicPartition(topic, partition, offset))
                self.consumer.pause([TopicPartition(topic, partition)])
        self.on_wait()
