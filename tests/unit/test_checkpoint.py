"""The lake's checkpoints (``pipeline.runtime.checkpoint``): offsets follow files, and
recovery removes what a crash left beyond the checkpoint, so each event is in the lake
exactly once (R1)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import SinkError
from pipeline.io.lake import Lake
from pipeline.runtime.checkpoint import Checkpoints, part_name
from tests.unit.events import event, rate


def _rated(n: int) -> pa.Table:
    return rate(*(event(call_id=f"c-{i}") for i in range(n))).rated


def _write(lake: Lake, topic: str, partition: int, first: int, last: int) -> list[Path]:
    return lake.write_rated(_rated(last - first + 1), part_name(topic, partition, first, last))


def test_part_names_sort_by_offset_and_parse_back(tmp_path: Path) -> None:
    assert part_name("calls", 3, 7, 12) == ("calls+00003+00000000000000000007+00000000000000000012")
    assert part_name("t", 0, 9, 9) < part_name("t", 0, 10, 10)
    lake = Lake(tmp_path)
    for first, last in ((10, 19), (0, 9)):
        _write(lake, "calls", 3, first, last)
    _write(lake, "calls", 4, 0, 9)  # another partition
    _write(lake, "calls+x", 3, 0, 9)  # a topic whose name extends this one's
    parts = Checkpoints(lake).parts("calls", 3)
    assert [(p.first, p.last) for p in parts] == [(0, 9), (10, 19)]
    assert {(p.topic, p.partition) for p in parts} == {("calls", 3)}


def test_commit_then_last_offset(tmp_path: Path) -> None:
    checkpoints = Checkpoints(Lake(tmp_path))
    assert checkpoints.last_offset("calls", 0) is None
    checkpoints.commit("calls", 0, 41)
    checkpoints.commit("calls", 0, 99)
    assert checkpoints.last_offset("calls", 0) == 99
    assert checkpoints.last_offset("calls", 1) is None
    doc = json.loads((tmp_path / "_checkpoints" / "calls+00000.json").read_text())
    assert doc == {"topic": "calls", "partition": 0, "last_offset": 99}
    assert not list((tmp_path / "_checkpoints").glob(".*.tmp"))


def test_recover_resumes_after_the_checkpoint_and_removes_orphans(tmp_path: Path) -> None:
    """A crash between a part and its checkpoint leaves an orphan part beyond the
    checkpoint, and a writer killed mid-write a temporary file: recovery deletes both
    so the range is rated again exactly once."""
    lake = Lake(tmp_path)
    checkpoints = Checkpoints(lake)
    kept = _write(lake, "calls", 2, 0, 9)
    checkpoints.commit("calls", 2, 9)
    orphan = _write(lake, "calls", 2, 10, 14)
    other = _write(lake, "calls", 5, 0, 4)  # another partition, no checkpoint: untouched
    tmp_part = kept[0].parent / f".{part_name('calls', 2, 15, 20)}.parquet.tmp"
    tmp_part.write_bytes(b"half a file")
    tmp_checkpoint = tmp_path / "_checkpoints" / ".calls+00002.json.tmp"
    tmp_checkpoint.write_bytes(b"{")

    assert checkpoints.recover("calls", 2) == 10
    assert all(p.is_file() for p in kept + other)
    assert not any(p.exists() for p in orphan)
    assert not tmp_part.exists()
    assert not tmp_checkpoint.exists()
    assert [(p.first, p.last) for p in checkpoints.parts("calls", 2)] == [(0, 9)]


def test_recover_without_a_checkpoint_deletes_every_part(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    written = _write(lake, "calls", 0, 0, 3)
    assert Checkpoints(lake).recover("calls", 0) is None
    assert not any(p.exists() for p in written)
    assert Checkpoints(Lake(tmp_path / "empty")).recover("calls", 0) is None


def test_a_checkpoint_that_cannot_be_written_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "_checkpoints").write_text("a file where the folder should be")
    with pytest.raises(SinkError, match="cannot write checkpoint"):
        Checkpoints(Lake(tmp_path)).commit("calls", 0, 1)
