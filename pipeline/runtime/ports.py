"""What the streaming service needs from outside itself, as protocols (its *ports*).

:func:`pipeline.streaming.build_service` plugs in the real adapters: a
``confluent_kafka.Consumer`` (:class:`GroupConsumer`), a
:class:`~pipeline.io.dead_letter_topic.DeadLetterProducer` (:class:`DeadLetterSink`) and
a :class:`~pipeline.lake.partitions.PartitionTable` (:class:`LakeTable`).
``tests/unit/fakes.py`` has in-memory ones, so the unit tests drive the real loop
without a broker, Redis or a filesystem.

:class:`LakeTable` is the seam of the table format: one Delta commit holds a range's
data files and the partition's last offset as an application transaction. The
committer (:mod:`.committer`) keeps the flush order around it and does not know how a
range becomes durable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from confluent_kafka import Message, TopicPartition

#: Test seam: called at named points of the service (see :mod:`.service`).
Hook = Callable[[str, dict[str, Any]], None]
#: A group rebalance callback: ``(consumer, partitions)``.
Rebalance = Callable[[Any, list[TopicPartition]], None]
#: Called by a :class:`LakeTable` as each step of a commit completes (``"committed"``): the committer turns marks into hook points and stage timings.
Mark = Callable[[str], None]


class GroupConsumer(Protocol):
    """The part of ``confluent_kafka.Consumer`` the service uses (all on its main thread)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: Rebalance | None = ...,
        on_revoke: Rebalance | None = ...,
        on_lost: Rebalance | None = ...,
    ) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def poll(self, timeout: float = -1) -> Message | None: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def unassign(self) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...
    ) -> None: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None: ...
    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """Where dead letters go (the dead-letter topic)."""

    def send(self, dead: pa.Table) -> int:
        """Deliver every row of ``dead`` and return only once all are acknowledged.
        Raises :class:`~pipeline.errors.InfrastructureError` when they are not."""
        ...


@dataclass(frozen=True)
class Flush:
    """One contiguous offset range ``first..last`` of one partition, every offset in it
    a rated record or a dead letter."""

    topic: str
    partition: int
    first: int
    last: int
    rated: pa.Table
    dead: pa.Table
    #: Kafka message timestamps (ms) of the range's events, for event-to-lake latency.
    stamps: npt.NDArray[np.int64]


class LakeTable(Protocol):
    """Where rated records become durable together with the last offset they cover."""

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """Prepare a newly assigned partition (undo what a crash left half done) and
        return the offset to resume at, or ``None`` when the lake holds nothing of it."""
        ...

    def commit(self, flush: Flush, mark: Mark) -> int:
        """Make ``flush.rated`` durable and record ``flush.last`` as the partition's
        durable offset, such that after a crash at any moment :meth:`resume_offset`
        returns either ``flush.first`` (nothing of the range visible) or
        ``flush.last + 1`` (all of it). Calls ``mark(step)`` after each step. Returns
        the number of files written. Raises :class:`~pipeline.errors.SinkError`."""
        ...
