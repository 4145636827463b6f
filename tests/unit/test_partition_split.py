"""Splitting a rated batch per partition keeps every row once and in offset order."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.buffer import split_by_partition


@given(st.lists(st.integers(0, 4), max_size=60))
def test_split_keeps_rows_once_in_order(partitions: list[int]) -> None:
    table = pa.table(
        {"source_partition": pa.array(partitions, pa.int32()), "row": list(range(len(partitions)))}
    )
    parts = split_by_partition(table)
    assert sorted(parts) == sorted(set(partitions))
    for p, part in parts.items():
        assert part.column("row").to_pylist() == [i for i, q in enumerate(partitions) if q == p]
