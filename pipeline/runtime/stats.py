"""Counters of one ``run`` and the service's own stage timings.

:class:`RunStats` is what :meth:`StreamingService.run` returns. Its
:attr:`RunStats.stage_seconds` is the documented hook point for profiling (the
benchmark reads it): wall seconds spent in each stage, summed over the run, named
``<thread>:<stage>``. The same seconds go to the Prometheus counter
``cdr_stage_seconds_total{stage=...}`` (:mod:`pipeline.metrics`).

=============================  ============================================================
stage                          time spent
=============================  ============================================================
``main:consume``               in ``Consumer.consume`` calls that returned messages
``main:consume_idle``          in ``Consumer.consume`` calls that returned none (waiting)
``main:stage``                 reading the messages' fields, handing them to the decoder
``main:wait_prepared``         waiting for the decode and lookup threads
``main:rate``                  ``rate_batch``
``main:buffer``                splitting the results per partition into the buffers
``main:flush``                 submitting due ranges to the writer, Kafka commits
``main:backpressure``          paused, waiting for the writer to catch up
``main:paused``                paused on a dependency outage (schema registry, Redis)
``decode:decode_batch``        decoding a batch (decode thread)
``decode:numbers``             parsing its numbers and distinct origins (decode thread)
``lookup:for_numbers``         enrichment: LNP through the cache and Redis (lookup thread)
``writer:<step>``              each flush step, up to the mark that ends it (writer
                               thread): ``dead-letters-acked``, then the lake's steps
                               (``committed``), then ``other``
                               (statistics, metrics, log line)
=============================  ============================================================

Each lake commit's own duration (the ``writer:committed`` step of one flush) is also
kept, the most recent :attr:`RunStats.max_commit_samples` of them
(:meth:`RunStats.commit_percentiles`; the histogram ``cdr_lake_commit_seconds``).

The ``main:*`` stages are sequential on the main thread; the other threads run
concurrently with it, so their totals show how busy each thread is.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline.metrics import ServiceMetrics


@dataclass
class RunStats:
    """Counters of one ``run`` (``consumed == rated + dead_letters`` once flushed)."""

    consumed: int = 0
    rated: int = 0
    dead_letters: int = 0
    files: int = 0
    flushes: int = 0
    started: float = field(default_factory=time.monotonic)
    busy_seconds: float = 0.0
    first_message_at: float | None = None
    last_flush_at: float | None = None
    by_reason: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[npt.NDArray[np.int64]] = field(default_factory=list)
    durable_offsets: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    #: Wall seconds per stage (see the module docstring), from every thread.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    #: At most this many recent latency samples are kept (a long run must not grow).
    max_latency_samples: int = 2_000_000
    #: Seconds of each lake commit (the ``writer:committed`` step), most recent only.
    commit_seconds: deque[float] = field(default_factory=deque)
    #: At most this many recent commit durations are kept.
    max_commit_samples: int = 100_000

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.commit_seconds = deque(self.commit_seconds, maxlen=self.max_commit_samples)

    def add_stage(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` (any thread)."""
        with self._lock:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def flushed(
        self,
        partition: int,
        last: int,
        *,
        rated: int,
        dead_letters: int,
        by_reason: Mapping[str, int],
        files: int,
        latencies_ms: npt.NDArray[np.int64],
    ) -> None:
        """Count one durable range of ``partition`` ending at offset ``last``."""
        self.record_latencies(latencies_ms)
        self.rated += rated
        self.dead_letters += dead_letters
        for reason, count in by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count
        self.files += files
        self.flushes += 1
        self.last_flush_at = time.monotonic()
        self.durable_offsets[partition] = last

    def record_latencies(self, latencies_ms: npt.NDArray[np.int64]) -> None:
        """Keep the event-to-lake latencies of a flush (the most recent samples only)."""
        self.latencies_ms.append(latencies_ms)
        kept = sum(a.size for a in self.latencies_ms)
        while (
            len(self.latencies_ms) > 1
            and kept - self.latencies_ms[0].size >= self.max_latency_samples
        ):
            kept -= self.latencies_ms.pop(0).size

    def latency_percentiles(self) -> tuple[float, float]:
        """Event-to-lake latency (ms): p50, p99 over the recent flushed events."""
        if not self.latencies_ms:
            return (0.0, 0.0)
        values = np.concatenate(self.latencies_ms)
        if values.size == 0:
            return (0.0, 0.0)
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))

    def record_commit(self, seconds: float) -> None:
        """Keep the duration of one lake commit (the most recent samples only)."""
        self.commit_seconds.append(seconds)

    def commit_percentiles(self) -> tuple[float, float]:
        """Lake commit duration (ms): p50, p99 over the recent commits."""
        if not self.commit_seconds:
            return (0.0, 0.0)
        p50, p99 = np.percentile(np.fromiter(self.commit_seconds, np.float64), [50, 99]) * 1000
        return float(p50), float(p99)


class StageClock:
    """Adds stage seconds to :attr:`RunStats.stage_seconds` and to the metrics."""

    def __init__(self, stats: RunStats, metrics: ServiceMetrics) -> None:
        self._stats = stats
        self._metrics = metrics

    def add(self, stage: str, seconds: float) -> None:
        self._stats.add_stage(stage, seconds)
        self._metrics.stage_seconds.labels(stage).inc(seconds)

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Time the ``with`` block as ``stage`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)
