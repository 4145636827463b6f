"""Offsets follow files: the lake's own record of what is durable, per topic-partition.

A partition's rated records are written as Parquet *parts* named
``<topic>+<partition>+<first>+<last>.parquet`` (offsets zero-padded, inclusive) in
each billing-cycle folder the range touches. Once every part of a range is durable
(and the range's dead letters are acknowledged by Kafka), the range is *committed*
by atomically replacing ``LAKE/_checkpoints/<topic>+<partition>.json`` with
``{"last_offset": last}``. Only then is the Kafka offset committed (for lag
monitoring; the lake is the source of truth).

On (re)assignment a partition resumes at ``last_offset + 1`` and any part that
starts after ``last_offset`` is an orphan of a crash between part and checkpoint:
it is deleted before consuming, and its range is rated again. So a crash at any
moment leaves every event in the lake exactly once.

:class:`CheckpointedLake` is this protocol as the service's
:class:`~pipeline.runtime.ports.LakeTable`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SinkError
from pipeline.io.atomic import temporary_name, write_bytes_atomic
from pipeline.io.lake import RATED, Lake
from pipeline.runtime.ports import Flush, Mark

_PART = re.compile(
    r"^(?P<topic>.+)\+(?P<partition>\d{5})\+(?P<first>\d{20})\+(?P<last>\d{20})\.parquet$"
)


def part_name(topic: str, partition: int, first: int, last: int) -> str:
    """The file stem of a part (without ``.parquet``): sortable, deterministic."""
    return f"{topic}+{partition:05d}+{first:020d}+{last:020d}"


@dataclass(frozen=True)
class Part:
    path: Path
    topic: str
    partition: int
    first: int
    last: int


class Checkpoints:
    """The ``_checkpoints`` folder of a lake."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.directory = lake.root / "_checkpoints"

    def _file(self, topic: str, partition: int) -> Path:
        return self.directory / f"{topic}+{partition:05d}.json"

    def last_offset(self, topic: str, partition: int) -> int | None:
        """The last offset committed to the lake for this partition, or ``None``."""
        path = self._file(topic, partition)
        if not path.is_file():
            return None
        return int(json.loads(path.read_text(encoding="utf-8"))["last_offset"])

    def commit(self, topic: str, partition: int, last: int) -> None:
        """Record ``last`` as durable (atomic replace + fsync). Raises :class:`SinkError`."""
        path = self._file(topic, partition)
        doc = {"topic": topic, "partition": partition, "last_offset": last}
        try:
            write_bytes_atomic(path, json.dumps(doc).encode("utf-8"))
        except OSError as exc:
            raise SinkError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc

    def parts(self, topic: str, partition: int) -> list[Part]:
        """Every part of this topic-partition in the lake."""
        base = self.lake.root / RATED
        found = []
        if base.is_dir():
            prefix = f"{topic}+{partition:05d}+"
            for path in base.glob(f"*/{prefix}*.parquet"):
                m = _PART.match(path.name)
                if m and m["topic"] == topic and int(m["partition"]) == partition:
                    found.append(Part(path, topic, partition, int(m["first"]), int(m["last"])))
        return sorted(found, key=lambda p: (p.first, str(p.path)))

    def recover(self, topic: str, partition: int) -> int | None:
        """Prepare a newly assigned partition: delete orphan parts (beyond the committed
        offset) and return the offset to resume at (``None``: nothing in the lake)."""
        last = self.last_offset(topic, partition)
        for part in self.parts(topic, partition):
            if last is None or part.first > last:
                part.path.unlink(missing_ok=True)
        base = self.lake.root / RATED
        if base.is_dir():  # temporary files of a writer killed mid-write
            for tmp in base.glob(f"*/.{topic}+{partition:05d}+*.tmp"):
                tmp.unlink(missing_ok=True)
        temporary_name(self._file(topic, partition)).unlink(missing_ok=True)
        return None if last is None else last + 1


class CheckpointedLake:
    """A :class:`~pipeline.runtime.ports.LakeTable` of Parquet parts and checkpoint
    files: a range's parts are written (``mark("files-written")``), then its
    checkpoint (``mark("checkpointed")``)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.checkpoints = Checkpoints(lake)

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.checkpoints.recover(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        name = part_name(flush.topic, flush.partition, flush.first, flush.last)
        files = self.lake.write_rated(flush.rated, name)
        mark("files-written")
        self.checkpoints.commit(flush.topic, flush.partition, flush.last)
        mark("checkpointed")
        return len(files)
