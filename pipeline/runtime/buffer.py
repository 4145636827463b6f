"""Per topic-partition buffers of rated records and dead letters awaiting a file.

A buffer covers a contiguous range of offsets ``[first, last]`` of one partition:
every consumed offset in it is either a rated record or a dead letter. It becomes
*due* (rotation) when it holds ``max_rows`` records, ``max_bytes`` bytes, or its
oldest record is ``max_age_s`` old.
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
