"""The re-sync path of the streaming service: the lake refuses a range of a partition
this member still holds (:class:`~pipeline.errors.FencedError`: another member
committed it while this one was paused), and the service re-reads its partitions from
the offsets the lake holds (``StreamingService._resync``).

The real loop over in-memory fakes (``tests/unit/fakes.py``), committing to a real
Delta table on ``tmp_path`` through the real :class:`PartitionTable`; the "other
member" is a second :class:`PartitionTable` on the same table. Throughout, R1: every
offset ends as one rated record or one dead letter, none lost, none twice. The same
against a real broker, with a member frozen past its session timeout:
``tests/integration/test_zombie.py``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.partitions import PartitionTable
from pipeline.lake.tables import RATED
from pipeline.runtime.ports import Flush, Mark
from tests.unit.fakes import FakeConsumer
from tests.unit.test_service_loop import TOPIC, make_rig, rated_offsets, traffic

FENCED = 0  # the partition another member takes over for a moment


class UsurpedTable:
    """The service's lake port (a :class:`PartitionTable` on ``root``), with a rival
    member on the same table: just before this member commits its ``nth`` range of
    partition :data:`FENCED`, the rival commits the first ``share`` of that range (the
    rows it would have rated from the same offsets), so this member's commit is fenced.
    """

    def __init__(self, root: Path, *, nth: int | None, share: float) -> None:
        self.mine = PartitionTable(Lake(root))
        self.rival = PartitionTable(Lake(root))
        self.nth = nth
        self.share = share
        self.seen = 0
        #: set: the next commit of partition FENCED is usurped (whatever ``nth``)
        self.armed = threading.Event()
        #: the range the rival took: (first, cut, rows committed)
        self.taken: tuple[int, int, int] | None = None
        self.refused: list[tuple[int, int, int]] = []  # partition, first, last

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.mine.resume_offset(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        if flush.partition == FENCED:
            self.seen += 1
            if self.seen == self.nth or self.armed.is_set():
                self.armed.clear()
                self._usurp(flush)
        try:
            return self.mine.commit(flush, mark)
        except Exception:
            self.refused.append((flush.partition, flush.first, flush.last))
            raise

    def _usurp(self, flush: Flush) -> None:
        cut = flush.first + int((flush.last - flush.first) * self.share)
        rows = flush.rated.filter(pc.less_equal(flush.rated.column("source_offset"), cut))
        self.rival.resume_offset(flush.topic, flush.partition)
        self.rival.commit_range(flush.topic, flush.partition, rows, flush.first, cut)
        self.taken = (flush.first, cut, rows.num_rows)


@pytest.mark.parametrize("share", [1.0, 0.5], ids=["whole-range", "half-range"])
def test_a_fenced_range_of_a_held_partition_is_reread_from_the_lake(
    tmp_path: Path, share: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Another member commits (all or the first half of) a range this member is about
    to commit: this member's commit is refused and dropped, so are its later ranges of
    the partition already queued; it re-syncs, resumes right after the rival's offset
    and commits the rest. Each offset is in the lake once (rated) or dead-lettered (R1);
    the refusal is counted (``cdr_ranges_fenced_total``) and logged."""
    caplog.set_level(logging.INFO, logger="pipeline")
    messages = traffic(600)
    table = UsurpedTable(tmp_path, nth=3, share=share)
    rig = make_rig(messages, lake=table, output=tmp_path, batch={"max_rows": 30})
    stats = rig.run()

    assert table.taken is not None, "the rival never committed"
    first, cut, rival_rows = table.taken
    assert table.refused, "nothing was fenced"
    assert table.refused[0][:2] == (FENCED, first), table.refused
    # the fenced partition was read again from just after the rival's offset
    handed = Counter(rig.consumer.handed_out)
    assert handed[(FENCED, cut + 1)] >= 2, "the partition was not re-read from the lake"
    log = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"fenced topic={TOPIC} partition={FENCED} offsets={first}-") for m in log
    )
    assert any(m.startswith("lake refused ranges of partitions=[0]") for m in log), log
    fenced = rig.service.metrics.registry.get_sample_value(
        "cdr_ranges_fenced_total", {"topic": TOPIC, "partition": str(FENCED)}
    )
    assert fenced == len([r for r in table.refused if r[0] == FENCED]) >= 1

    # R1: each offset once, rated or dead-lettered; nothing lost
    rated = Counter(rated_offsets(rig.lake, tmp_path))
    assert [k for k, n in rated.items() if n > 1] == [], "an offset is in the lake twice"
    dead = {(r["source_partition"], r["source_offset"]) for r in rig.dead.rows}
    assert not set(rated) & dead, "an offset is both rated and dead-lettered"
    assert rig.topic.all_offsets() - set(rated) - dead == set(), "an offset was lost"
    assert stats.rated + rival_rows == sum(rated.values())
    # the table's application transactions end at each partition's last offset
    lake = Lake(tmp_path)
    for partition, log_ in rig.topic.logs.items():
        app = partition_app_id(TOPIC, partition)
        assert lake.transaction_version(RATED, app) == len(log_) - 1
    assert rig.consumer.committed == {p: len(log_) for p, log_ in rig.topic.logs.items()}


def test_a_range_fenced_while_a_revocation_drains_needs_no_resync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The group revokes partition 0 while a range of it is being written, and another
    member has committed it meanwhile: the range is fenced during the revocation's
    drain. That refusal is moot (whatever is assigned next resumes from the lake): the
    service must not re-sync its new assignment for it (before the fix it revoked and
    re-assigned partition 1 once more, dropping its staged batch, and logged that the
    lake refused ranges). Partition 0 comes back later and resumes after the rival."""
    caplog.set_level(logging.INFO, logger="pipeline")
    messages = traffic(600)
    table = UsurpedTable(tmp_path, nth=None, share=1.0)
    # nothing is due before the revocation: it flushes what partition 0 buffered
    batch = {"max_rows": 10_000, "max_age_s": 30.0}
    rig = make_rig(messages, lake=table, output=tmp_path, batch=batch)

    def give_away_partition_0(consumer: FakeConsumer) -> None:
        table.armed.set()  # the range of 0 drained by the revocation is usurped
        consumer.rebalance([1])

    rig.consumer.at_call(5, give_away_partition_0)
    rig.consumer.at_call(12, lambda c: c.rebalance([0, 1]))
    stats = rig.run()

    assert table.taken is not None, "the rival never committed"
    assert table.refused == [(FENCED, 0, table.taken[1])], table.refused
    log = [r.getMessage() for r in caplog.records]
    assert not [m for m in log if m.startswith("lake refused ranges")], "needless re-sync"
    revoked = [info["partitions"] for point, info in rig.points if point == "group:revoked"]
    assert revoked == [[0, 1], [1], [0, 1]], revoked  # the group's two and the close
    rated = Counter(rated_offsets(rig.lake, tmp_path))
    assert [k for k, n in rated.items() if n > 1] == [], "an offset is in the lake twice"
    dead = {(r["source_partition"], r["source_offset"]) for r in rig.dead.rows}
    assert rig.topic.all_offsets() - set(rated) - dead == set(), "an offset was lost"
    assert stats.rated + table.taken[2] == sum(rated.values())
