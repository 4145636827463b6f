"""In-memory stand-ins for the streaming service's ports (``pipeline.runtime.ports``),
in the spirit of bytewax's ``testing.py``: the unit tests drive the real loop
(staging, rating, buffers, committer, pause policy) without a broker, Redis or, if
they like, a filesystem.

* :class:`FakeTopic` holds the messages of one topic, per partition.
* :class:`FakeConsumer` is the subset of ``confluent_kafka.Consumer`` the service
  uses, with scripted rebalances: :meth:`FakeConsumer.at_call` runs an action inside
  the n-th ``consume``/``poll`` call, where librdkafka would run group callbacks.
* :class:`FakeDeadLetters` is the dead-letter topic (acknowledges, or fails N times).
* :class:`MemoryLake` is a lake table in memory; :class:`FailingLake` makes any lake
  table fail its next N commits.
* :class:`MemoryReferenceReader` serves reference data (the shipped sample) to the
  real :class:`~pipeline.runtime.enrich.Enricher`, and can be taken down like Redis.

None of them is thread-safe beyond what the service needs: the consumer is called on
the main thread only, the dead-letter sink and the lake on the writer thread only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from confluent_kafka import Message, TopicPartition

from pipeline.errors import BrokerError, ReferenceStoreError, SinkError
from pipeline.rating.reference import ReferenceData
from pipeline.runtime.ports import Flush, LakeTable, Mark, Rebalance

I64 = npt.NDArray[np.int64]
OFFSET_INVALID = -1001


@dataclass
class FakeTopic:
    """The messages of one topic: ``(key, value, timestamp ms)`` per offset, per partition."""

    name: str
    partitions: int
    logs: dict[int, list[tuple[bytes | None, bytes | None, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = {p: [] for p in range(self.partitions)}

    def produce(
        self, partition: int, value: bytes | None, key: bytes | None = None, *, ts_ms: int = 0
    ) -> int:
        """Append a message; its offset."""
        log = self.logs[partition]
        log.append((key, value, ts_ms or int(time.time() * 1000)))
        return len(log) - 1

    def produce_all(self, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Spread ``(key, value)`` pairs round-robin over the partitions; how many."""
        n = 0
        for n, (key, value) in enumerate(messages, start=1):
            self.produce((n - 1) % self.partitions, value, key)
        return n

    def message(self, partition: int, offset: int) -> Message:
        key, value, ts = self.logs[partition][offset]
        return Message(
            topic=self.name,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            timestamp=(1, ts),
        )

    def all_offsets(self) -> set[tuple[int, int]]:
        return {(p, o) for p, log in self.logs.items() for o in range(len(log))}


class FakeConsumer:
    """A consumer-group member of one :class:`FakeTopic` (see the module docstring).

    On the first call it gets ``initial`` (default: every partition). Positions start
    at the offset the service assigns, else the group's committed offset, else 0.
    ``consume`` hands out up to ``chunk`` messages per unpaused partition in turn.
    """

    def __init__(
        self,
        topic: FakeTopic,
        *,
        initial: list[int] | None = None,
        committed: dict[int, int] | None = None,
        chunk: int = 7,
        refetch_s: float = 0.0,
    ) -> None:
        self.topic = topic
        #: After ``resume``, a partition hands out nothing for this long: librdkafka
        #: drops a paused partition's prefetched messages and fetches afresh.
        self.refetch_s = refetch_s
        self.resumed_at: dict[int, float] = {}
        self.initial = list(range(topic.partitions)) if initial is None else initial
        self.committed: dict[int, int] = committed if committed is not None else {}
        self.chunk = chunk
        self.calls = 0
        self.closed = False
        self.paused: set[int] = set()
        self.positions: dict[int, int] = {}  # owned partition -> next offset to hand out
        self.read_any: set[int] = set()
        self.handed_out: list[tuple[int, int]] = []
        self.polled_messages: list[tuple[int, int]] = []  # handed out by poll()
        self.rebalances = 0
        self._assigned: list[int] | None = None
        self._on_assign: Rebalance | None = None
        self._on_revoke: Rebalance | None = None
        self._on_lost: Rebalance | None = None
        self._script: dict[int, list[Callable[[FakeConsumer], None]]] = {}
        self._watchers: list[Callable[[FakeConsumer, str], None]] = []

    # ------------------------------------------------------------------ scripting
    def at_call(self, n: int, action: Callable[[FakeConsumer], None]) -> None:
        """Run ``action(self)`` at the start of the ``n``-th consume/poll call (1-based)."""
        self._script.setdefault(n, []).append(action)

    def watch(self, watcher: Callable[[FakeConsumer, str], None]) -> None:
        """Call ``watcher(self, "consume" | "poll")`` at the start of every call (after
        the scripted actions): to act on the service's state at that moment."""
        self._watchers.append(watcher)

    def rebalance(self, partitions: list[int]) -> None:
        """Revoke the current assignment and assign ``partitions`` (callbacks run now:
        call it from an :meth:`at_call` action, as librdkafka runs them in a poll)."""
        self.rebalances += 1
        if self._assigned is not None and self._on_revoke is not None:
            self._on_revoke(self, [TopicPartition(self.topic.name, p) for p in self._assigned])
        self._assigned = None
        if self._on_assign is not None:
            self._on_assign(
                self, [TopicPartition(self.topic.name, p, OFFSET_INVALID) for p in partitions]
            )

    def lose(self) -> None:
        """The session timed out: the whole assignment is lost (``on_lost``, or
        ``on_revoke`` without one, as confluent-kafka does). Call it from an
        :meth:`at_call` action; :meth:`rebalance` then gives a new assignment."""
        if self._assigned is None:
            return
        lost = [TopicPartition(self.topic.name, p) for p in self._assigned]
        callback = self._on_lost if self._on_lost is not None else self._on_revoke
        self._assigned = None
        if callback is not None:
            callback(self, lost)

    def _turn(self, method: str) -> None:
        if self.closed:
            raise RuntimeError("consumer closed")
        self.calls += 1
        if self.calls == 1 and self._assigned is None:
            self.rebalance(self.initial)
        for action in self._script.pop(self.calls, []):
            action(self)
        for watcher in self._watchers:
            watcher(self, method)

    # ------------------------------------------------------------------ the port
    def subscribe(
        self,
        topics: list[str],
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_lost: Rebalance | None = None,
    ) -> None:
        assert topics == [self.topic.name]
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self._turn("consume")
        out = self._fetch(num_messages)
        if not out:
            time.sleep(min(max(timeout, 0.0), 0.002))
        return out

    def poll(self, timeout: float = -1) -> Message | None:
        self._turn("poll")
        out = self._fetch(1)
        if out:
            self.polled_messages.extend((m.partition() or 0, m.offset() or 0) for m in out)
            return out[0]
        return None

    def _fetch(self, most: int) -> list[Message]:
        out: list[Message] = []
        progress = True
        while len(out) < most and progress:
            progress = False
            for p in sorted(self.positions):
                if p in self.paused:
                    continue
                if time.monotonic() < self.resumed_at.get(p, float("-inf")) + self.refetch_s:
                    continue
                end = min(len(self.topic.logs[p]), self.positions[p] + self.chunk)
                end = min(end, self.positions[p] + most - len(out))
                for offset in range(self.positions[p], end):
                    out.append(self.topic.message(p, offset))
                    self.handed_out.append((p, offset))
                    progress = True
                if end > self.positions[p]:
                    self.read_any.add(p)
                    self.positions[p] = end
        return out

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned = [tp.partition for tp in partitions]
        self.positions = {}
        self.read_any = set()
        self.paused = set()  # a new assignment starts unpaused, like librdkafka's
        for tp in partitions:
            start = tp.offset if tp.offset >= 0 else self.committed.get(tp.partition, 0)
            self.positions[tp.partition] = start

    def unassign(self) -> None:
        self._assigned = None
        self.positions = {}
        self.paused = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic.name, p) for p in self._assigned or []]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions if tp.partition in self.positions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        resumed = {tp.partition for tp in partitions} & self.paused
        self.paused -= resumed
        self.resumed_at.update(dict.fromkeys(resumed, time.monotonic()))

    def seek(self, partition: TopicPartition) -> None:
        self.positions[partition.partition] = partition.offset

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = True) -> None:
        for tp in offsets:
            self.committed[tp.partition] = tp.offset

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.positions[tp.partition] if tp.partition in self.read_any else OFFSET_INVALID,
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None:
        return 0, len(self.topic.logs[partition.partition])

    def close(self) -> None:
        if self._assigned is not None and self._on_revoke is not None:
            self._on_revoke(self, [TopicPartition(self.topic.name, p) for p in self._assigned])
        self._assigned = None
        self.closed = True


_SOURCE = ["source_partition", "source_offset", "reason"]


class FakeDeadLetters:
    """The dead-letter topic: keeps what it acknowledged; ``failures`` next sends of a
    non-empty table raise :class:`BrokerError` first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.rows: list[dict[str, Any]] = []
        self.attempts = 0

    def send(self, dead: pa.Table) -> int:
        if dead.num_rows == 0:
            return 0
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise BrokerError("dead letters not delivered: broker down (fake)")
        self.rows.extend(dead.select(_SOURCE).to_pylist())
        return int(dead.num_rows)


class MemoryLake:
    """A lake table in memory: each commit appends its rated rows and records its last
    offset, atomically (so a restart resumes exactly after it)."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.commits: list[tuple[int, int, int]] = []  # partition, first, last

    def resume_offset(self, topic: str, partition: int) -> int | None:
        last = self.offsets.get((topic, partition))
        return None if last is None else last + 1

    def commit(self, flush: Flush, mark: Mark) -> int:
        self.tables.append(flush.rated)
        self.offsets[(flush.topic, flush.partition)] = flush.last
        self.commits.append((flush.partition, flush.first, flush.last))
        mark("committed")
        return 1 if flush.rated.num_rows else 0

    def rated(self) -> list[tuple[int, int]]:
        """``(source_partition, source_offset)`` of every rated row, in commit order."""
        rows: list[tuple[int, int]] = []
        for table in self.tables:
            rows += zip(
                table.column("source_partition").to_pylist(),
                table.column("source_offset").to_pylist(),
                strict=True,
            )
        return rows


class FailingLake:
    """Any lake table whose next ``failures`` commits raise :class:`SinkError`."""

    def __init__(self, inner: LakeTable, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.inner.resume_offset(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("cannot write the lake: disk full (fake)")
        return self.inner.commit(flush, mark)


class MemoryReferenceReader:
    """Reference data for the real ``Enricher``, from one :class:`ReferenceData`
    (whose LNP table answers lookups). While :attr:`down` is set every call raises
    :class:`ReferenceStoreError`, like Redis going away."""

    def __init__(self, reference: ReferenceData) -> None:
        self.reference = reference
        self.down = threading.Event()
        self.lookups = 0
        self.failed = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.failed += 1
            raise ReferenceStoreError("redis unreachable: connection refused (fake)")

    def snapshot(self) -> ReferenceData:
        self._check()
        return self.reference

    def current_version(self) -> str | None:
        self._check()
        return self.reference.version

    def lookup_lnp_array(self, tns: I64) -> tuple[str, pa.Array]:
        self._check()
        self.lookups += 1
        ref = self.reference
        pos = ref.lnp.find(np.asarray(tns, dtype=np.int64))
        ocns = [ref.ocns[int(ref.lnp_ocn[i])] if i >= 0 else None for i in pos.tolist()]
        return ref.version, pa.array(ocns, pa.string())
