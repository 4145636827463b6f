"""The streaming service's view of the lake: topic-partition ranges committed to
``rated_calls`` with their offsets (:meth:`Lake.commit_partition`), each commit checked
against the offset this member expects the table to hold.

:class:`PartitionTable` has the shape of the service's lake port (``LakeTable`` in the
refactored service: ``resume_offset(topic, partition)`` and ``commit(flush, mark)``),
so it plugs in as is. The expected offset of a partition is set by
:meth:`PartitionTable.resume_offset` (on assignment) and advanced by each commit; a
commit the table refuses raises :class:`~pipeline.errors.FencedError` (drop the range,
never retry; if the partition is still assigned here, re-read it from
:meth:`resume_offset`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipeline.errors import FencedError
from pipeline.lake.lake import Lake


class Range(Protocol):
    """One contiguous offset range of one partition (the service's ``Flush``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def first(self) -> int: ...
    @property
    def last(self) -> int: ...
    @property
    def rated(self) -> pa.Table: ...
    @property
    def stamps(self) -> npt.NDArray[np.int64]: ...


class PartitionTable:
    """``rated_calls`` of ``lake`` as the streaming service commits to it."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._expected: dict[tuple[str, int], int | None] = {}
        #: Partitions whose commit was refused: every later commit of theirs is refused
        #: too until :meth:`resume_offset` re-syncs them (a range submitted before the
        #: re-sync must never land after it, or the offsets between would be skipped).
        self._fenced: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """The offset to resume ``topic[partition]`` at (None: the lake holds none);
        later commits of the partition expect the table to hold ``resume - 1``."""
        resume = self.lake.resume_offset(topic, partition)
        with self._lock:
            self._expected[(topic, partition)] = None if resume is None else resume - 1
            self._fenced.discard((topic, partition))
        return resume

    def commit_range(
        self, topic: str, partition: int, rated: pa.Table, first: int, last: int
    ) -> int:
        """One commit of ``rated`` with the partition's offset ``last`` (see
        :meth:`Lake.commit_partition`). Returns the data commits made (1). Raises
        :class:`FencedError` (another member committed the partition) or
        :class:`SinkError` (retry)."""
        key = (topic, partition)
        with self._lock:
            if key in self._fenced:
                raise FencedError(
                    f"{topic}[{partition}] offsets={first}-{last} not committed: the "
                    "partition was fenced by an earlier range and is not re-synced yet"
                )
            expected = self._expected.get(key)
        try:
            self.lake.commit_partition(topic, partition, rated, first, last, expected=expected)
        except FencedError:
            with self._lock:
                self._fenced.add(key)
            raise
        with self._lock:
            self._expected[key] = last
        return 1

    def commit(self, flush: Range, mark: Callable[[str], None]) -> int:
        """The service port: :meth:`commit_range` of ``flush``, then ``mark("committed")``."""
        done = self.commit_range(flush.topic, flush.partition, flush.rated, flush.first, flush.last)
        mark("committed")
        return done

    def forget(self, topic: str, partition: int) -> None:
        """The partition is no longer assigned here."""
        with self._lock:
            self._expected.pop((topic, partition), None)
