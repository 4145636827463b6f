"""Per-partition buffers (``pipeline.runtime.buffer``): a buffer is one contiguous
offset range in which every offset is a rated record or a dead letter (R1), and it
rotates on rows, bytes or age."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.rating.columns import DEAD_LETTER_SCHEMA, RATED_SCHEMA
from pipeline.runtime.buffer import Buffers, PartitionBuffer
from pipeline.settings import BatchSettings
from tests.unit.events import event, rate


def _results(n_rated: int, n_dead: int) -> tuple[pa.Table, pa.Table]:
    good = [event(call_id=f"ok-{i}") for i in range(n_rated)]
    bad = [event(call_id=f"bad-{i}", account_id="NO-SUCH-ACCOUNT") for i in range(n_dead)]
    result = rate(*good, *bad)
    assert (result.rated.num_rows, result.dead_letters.num_rows) == (n_rated, n_dead)
    return result.rated, result.dead_letters


def _stamps(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) + 1_000


def test_a_new_buffer_is_empty_and_never_due() -> None:
    buffer = PartitionBuffer("t", 0)
    assert buffer.empty
    assert not buffer.due(BatchSettings(max_rows=1, max_age_s=0.001), now=1e9)


def test_add_then_take_returns_the_range_and_resets() -> None:
    """R1: the range's rated records and dead letters together cover first..last."""
    buffer = PartitionBuffer("t", 3)
    rated, dead = _results(3, 1)
    buffer.add(rated, dead, 10, 13, _stamps(4), now=5.0)
    rated2, dead2 = _results(2, 0)
    buffer.add(rated2, dead2, 14, 15, _stamps(2), now=6.0)
    assert not buffer.empty
    assert (buffer.first, buffer.last, buffer.rows, buffer.opened_at) == (10, 15, 6, 5.0)

    got_rated, got_dead, first, last, stamps = buffer.take()
    assert (first, last) == (10, 15)
    assert got_rated.num_rows == 5
    assert got_dead.num_rows == 1
    assert got_rated.num_rows + got_dead.num_rows == last - first + 1
    assert stamps.tolist() == [*_stamps(4).tolist(), *_stamps(2).tolist()]
    assert (buffer.empty, buffer.rows, buffer.nbytes, buffer.opened_at) == (True, 0, 0, None)


def test_take_of_a_range_without_rated_records_gives_empty_tables_of_the_schemas() -> None:
    buffer = PartitionBuffer("t", 0)
    _, dead = _results(0, 2)
    buffer.add(RATED_SCHEMA.empty_table(), dead, 0, 1, _stamps(2), now=0.0)
    rated, got_dead, *_ = buffer.take()
    assert rated.schema.equals(RATED_SCHEMA)
    assert rated.num_rows == 0
    assert got_dead.schema.equals(DEAD_LETTER_SCHEMA)


def test_offsets_must_move_forward() -> None:
    buffer = PartitionBuffer("t", 1)
    rated, dead = _results(1, 0)
    buffer.add(rated, dead, 5, 5, _stamps(1), now=0.0)
    with pytest.raises(ValueError, match=r"offsets go backwards on t\[1\]: 5 after 5"):
        buffer.add(rated, dead, 5, 5, _stamps(1), now=0.0)


@pytest.mark.parametrize(
    ("settings", "now", "due"),
    [
        (BatchSettings(max_rows=3), 0.0, True),  # rows
        (BatchSettings(max_rows=4), 0.0, False),
        (BatchSettings(max_bytes=1), 0.0, True),  # bytes
        (BatchSettings(max_age_s=2.0), 101.9, False),  # age
        (BatchSettings(max_age_s=2.0), 102.0, True),
    ],
)
def test_due_by_rows_bytes_or_age(settings: BatchSettings, now: float, due: bool) -> None:
    buffer = PartitionBuffer("t", 0)
    rated, dead = _results(2, 1)
    buffer.add(rated, dead, 0, 2, _stamps(3), now=100.0)
    assert buffer.due(settings, now) is due


def test_buffers_split_a_batch_per_owned_partition() -> None:
    """Each owned partition's buffer gets its rows and its offset range; rows of a
    partition not owned (revoked while the batch was in flight) are dropped."""
    rated, dead = _results(4, 2)
    # messages in poll order: partitions 0, 1, 0, 2, 1, 0 at these offsets
    partitions = np.array([0, 1, 0, 2, 1, 0], np.int32)
    offsets = np.array([10, 20, 11, 30, 21, 12], np.int64)
    source = pa.array([0, 1, 0, 2], pa.int32())
    rated = rated.set_column(
        rated.schema.get_field_index("source_partition"), "source_partition", source
    )
    dead_source = pa.array([1, 0], pa.int32())
    dead = dead.set_column(
        dead.schema.get_field_index("source_partition"), "source_partition", dead_source
    )
    buffers = Buffers()
    buffers.open("t", 0)
    buffers.open("t", 1)
    buffers.add_batch(partitions, offsets, _stamps(6), rated, dead, now=1.0)
    assert 2 not in buffers
    by_partition = {b.partition: b for b in buffers.nonempty()}
    assert sorted(by_partition) == [0, 1]
    assert (by_partition[0].first, by_partition[0].last, by_partition[0].rows) == (10, 12, 3)
    assert (by_partition[1].first, by_partition[1].last, by_partition[1].rows) == (20, 21, 2)
    assert [b.partition for b in buffers.due(BatchSettings(max_rows=3), 1.0)] == [0]
    popped = buffers.pop(0)
    assert popped is not None
    assert popped.partition == 0
    assert buffers.pop(0) is None
