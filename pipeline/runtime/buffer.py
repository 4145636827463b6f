"""Per topic-partition buffers of rated records and dead letters awaiting a file.

A buffer covers a contiguous range of offsets ``[first, last]`` of one partition:
every consumed offset in it is either a rated record or a dead letter. It becomes
*due* (rotation) when it holds ``max_rows`` records, ``max_bytes`` bytes, or its
oldest record is ``max_age_s`` old. :class:`Buffers` holds the buffers of the
partitions one member owns and splits each rated batch among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipeline.rating.columns import DEAD_LETTER_SCHEMA, RATED_SCHEMA
from pipeline.settings import BatchSettings


@dataclass
class PartitionBuffer:
    """The buffered range of one topic-partition."""

    topic: str
    partition: int
    first: int | None = None
    last: int | None = None
    rows: int = 0
    nbytes: int = 0
    opened_at: float | None = None
    rated: list[pa.Table] = field(default_factory=list)
    dead: list[pa.Table] = field(default_factory=list)
    #: Kafka message timestamps (ms) of the buffered events, for event-to-lake latency.
    timestamps_ms: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def add(
        self,
        rated: pa.Table,
        dead: pa.Table,
        first: int,
        last: int,
        timestamps_ms: npt.NDArray[np.int64],
        now: float,
    ) -> None:
        """Append the results for offsets ``first..last`` (inclusive) of this partition."""
        if self.last is not None and first <= self.last:
            raise ValueError(
                f"offsets go backwards on {self.topic}[{self.partition}]: {first} after {self.last}"
            )
        if self.first is None:
            self.first, self.opened_at = first, now
        self.last = last
        if rated.num_rows:
            self.rated.append(rated)
        if dead.num_rows:
            self.dead.append(dead)
        self.rows += rated.num_rows + dead.num_rows
        self.nbytes += rated.nbytes + dead.nbytes
        self.timestamps_ms.append(timestamps_ms)

    @property
    def empty(self) -> bool:
        return self.first is None

    def due(self, batch: BatchSettings, now: float) -> bool:
        """Rotation: rows, bytes or age past their limits."""
        if self.empty or self.opened_at is None:
            return False
        return (
            self.rows >= batch.max_rows
            or self.nbytes >= batch.max_bytes
            or now - self.opened_at >= batch.max_age_s
        )

    def take(self) -> tuple[pa.Table, pa.Table, int, int, npt.NDArray[np.int64]]:
        """Everything buffered (rated, dead, first, last, timestamps) and reset."""
        assert self.first is not None
        assert self.last is not None
        rated = pa.concat_tables(self.rated) if self.rated else RATED_SCHEMA.empty_table()
        dead = pa.concat_tables(self.dead) if self.dead else DEAD_LETTER_SCHEMA.empty_table()
        stamps = np.concatenate(self.timestamps_ms) if self.timestamps_ms else np.zeros(0, np.int64)
        out = (rated, dead, self.first, self.last, stamps)
        self.first = self.last = self.opened_at = None
        self.rows = self.nbytes = 0
        self.rated, self.dead, self.timestamps_ms = [], [], []
        return out


_EMPTY_RATED = RATED_SCHEMA.empty_table()
_EMPTY_DEAD = DEAD_LETTER_SCHEMA.empty_table()


def split_by_partition(table: pa.Table) -> dict[int, pa.Table]:
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


class Buffers:
    """The buffers of the partitions this member owns, by partition number."""

    def __init__(self) -> None:
        self._by_partition: dict[int, PartitionBuffer] = {}

    def __contains__(self, partition: int) -> bool:
        return partition in self._by_partition

    def open(self, topic: str, partition: int) -> None:
        """A fresh, empty buffer for a newly assigned partition."""
        self._by_partition[partition] = PartitionBuffer(topic, partition)

    def pop(self, partition: int) -> PartitionBuffer | None:
        """Stop buffering ``partition`` (revoked); its buffer, if it had one."""
        return self._by_partition.pop(partition, None)

    def add_batch(
        self,
        partitions: npt.NDArray[np.int32],
        offsets: npt.NDArray[np.int64],
        stamps: npt.NDArray[np.int64],
        rated: pa.Table,
        dead: pa.Table,
        now: float,
    ) -> None:
        """Add one batch's results: ``partitions``, ``offsets`` and ``stamps`` are the
        batch's messages (poll order), ``rated`` and ``dead`` its results (each row
        with its ``source_partition``). Partitions not owned are skipped."""
        rated_parts = split_by_partition(rated)
        dead_parts = split_by_partition(dead)
        order = np.argsort(partitions, kind="stable")
        bounds = np.flatnonzero(np.diff(partitions[order])) + 1
        for rows in np.split(order, bounds):
            p = int(partitions[rows[0]])
            buffer = self._by_partition.get(p)
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

    def due(self, batch: BatchSettings, now: float) -> list[PartitionBuffer]:
        """The buffers due for a flush (rows, bytes or age past the limits)."""
        return [b for b in self._by_partition.values() if b.due(batch, now)]

    def nonempty(self) -> list[PartitionBuffer]:
        """Every buffer holding something (to flush before stopping)."""
        return [b for b in self._by_partition.values() if not b.empty]
