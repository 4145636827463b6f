"""The lake commit latency the service records per flush (issue 9 #9): each commit's
duration (the ``writer:committed`` step) in ``RunStats.commit_seconds`` (bounded) and
the ``cdr_lake_commit_seconds`` histogram; the streaming benchmark reports their p50
and p99."""

from __future__ import annotations

import time

from pipeline.runtime.ports import Flush, LakeTable, Mark
from pipeline.runtime.stats import RunStats
from tests.unit.fakes import MemoryLake
from tests.unit.test_service_loop import make_rig, traffic


class SlowLake:
    """A lake table whose commits take ``seconds`` (before the ``committed`` mark)."""

    def __init__(self, inner: LakeTable, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.inner.resume_offset(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        time.sleep(self.seconds)
        return self.inner.commit(flush, mark)


def test_each_lake_commit_is_timed() -> None:
    memory = MemoryLake()
    rig = make_rig(traffic(300), lake=SlowLake(memory, 0.02))
    stats = rig.run()
    commits = len(memory.commits)
    assert commits == stats.flushes > 1
    assert len(stats.commit_seconds) == commits
    assert min(stats.commit_seconds) >= 0.02
    p50, p99 = stats.commit_percentiles()
    assert 20.0 <= p50 <= p99 < 5_000.0
    registry = rig.service.metrics.registry
    assert registry.get_sample_value("cdr_lake_commit_seconds_count") == commits
    total = registry.get_sample_value("cdr_lake_commit_seconds_sum")
    assert total is not None
    assert abs(total - sum(stats.commit_seconds)) < 1e-6
    assert abs(stats.stage_seconds["writer:committed"] - total) < 1e-6


def test_commit_samples_are_bounded() -> None:
    stats = RunStats(max_commit_samples=3)
    assert stats.commit_percentiles() == (0.0, 0.0)
    for seconds in (9.0, 9.0, 0.001, 0.002, 0.003):
        stats.record_commit(seconds)
    assert list(stats.commit_seconds) == [0.001, 0.002, 0.003]
    assert stats.commit_percentiles()[0] == 2.0
