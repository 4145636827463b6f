"""Consumer lag per owned partition, from librdkafka's cached high watermarks.

Recomputed at most every :data:`LAG_INTERVAL_S` (a few microseconds each, no broker
round trip) into ``RunStats.lag`` and the ``cdr_consumer_lag`` gauge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException

from pipeline.metrics import ServiceMetrics
from pipeline.runtime.ports import GroupConsumer
from pipeline.runtime.stats import RunStats

LOG = logging.getLogger(__name__)

#: Seconds between two consumer-lag computations.
LAG_INTERVAL_S = 1.0


@dataclass(eq=False)
class LagMonitor:
    """Lag of the partitions a consumer owns (main thread only)."""

    consumer: GroupConsumer
    topic: str
    stats: RunStats
    metrics: ServiceMetrics
    interval_s: float = LAG_INTERVAL_S

    def __post_init__(self) -> None:
        self._at = float("-inf")
        self._start_offsets: dict[int, int] = {}  # partition -> offset it was assigned at

    def assigned(self, partition: int, offset: int) -> None:
        """``partition`` was assigned at ``offset`` (negative: the group's or earliest)."""
        self._start_offsets[partition] = offset

    def forget(self, partitions: list[int]) -> None:
        """Drop revoked partitions (their new owner reports them)."""
        for p in partitions:
            self._start_offsets.pop(p, None)
            self.stats.lag.pop(p, None)
        self.metrics.forget_partitions(self.topic, partitions)

    def maybe_update(self, now: float) -> None:
        if now - self._at >= self.interval_s:
            self._at = now
            self.update()

    def update(self) -> None:
        """Cached high watermark minus position (the next offset the service will
        read); before the first message of a partition, minus the offset it was
        assigned at (or the low watermark). Partitions whose watermark is not known
        yet are left out."""
        try:
            assignment = self.consumer.assignment()
            if not assignment:
                return
            for tp in self.consumer.position(assignment):
                # documented to return None on timeout, though typed as a tuple
                marks = self.consumer.get_watermark_offsets(tp, cached=True)
                if marks is None:
                    continue
                low, high = marks
                position = tp.offset
                if position < 0:
                    position = self._start_offsets.get(tp.partition, -1)
                if position < 0:
                    position = low
                if high < 0 or position < 0:
                    continue
                lag = max(high - position, 0)
                self.stats.lag[tp.partition] = lag
                self.metrics.set_lag(tp.topic, tp.partition, lag)
        except (KafkaException, RuntimeError) as exc:  # metrics must never stop the loop
            LOG.debug("consumer lag not computed: %s", exc)
