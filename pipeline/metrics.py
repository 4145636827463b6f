"""Prometheus metrics of one streaming service (``cdr-pipeline run``).

Each :class:`ServiceMetrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(never the process-global one), so several services can live in one process (tests,
benchmarks) without their counters mixing.

The service updates the metrics once per poll batch and once per flush, never per
record: the per-event histogram (event-to-lake latency) is filled with one vectorized
``numpy`` pass per flush. Enrichment-cache counters are read from the
:class:`~pipeline.runtime.enrich.Enricher` at scrape time, at no cost to the hot path.

Metric names (all prefixed ``cdr_``; ``topic`` is the input topic):

=========================================  =========  ================================
name                                       type       labels / meaning
=========================================  =========  ================================
``cdr_events_consumed_total``              counter    topic; messages taken into a batch
``cdr_events_rated_total``                 counter    topic; rated records made durable
``cdr_events_dead_lettered_total``         counter    topic, reason; dead letters acked
``cdr_files_written_total``                counter    topic; lake commits (one per flush)
``cdr_flushes_total``                      counter    topic; flushed offset ranges
``cdr_batch_seconds``                      histogram  decode + enrich + rate of one poll
``cdr_flush_seconds``                      histogram  dead letters + Delta commit (rows + offset)
``cdr_lake_commit_seconds``                histogram  one Delta commit of a flush (rows + offset)
``cdr_ranges_fenced_total``                counter    topic, partition; ranges the lake refused
``cdr_event_to_lake_seconds``              histogram  Kafka message timestamp -> durable
``cdr_consumer_lag``                       gauge      topic, partition; high watermark - position
``cdr_last_durable_offset``                gauge      topic, partition; last offset in the lake
``cdr_enrichment_cache_hits_total``        counter    LNP lookups answered from the cache
``cdr_enrichment_cache_misses_total``      counter    LNP lookups that went to Redis
``cdr_enrichment_cache_hit_ratio``         gauge      hits / (hits + misses), 0 before any lookup
``cdr_consumption_paused``                 gauge      1 while paused on a failed dependency
``cdr_stage_seconds_total``                counter    stage; wall seconds per service stage
=========================================  =========  ================================

``cdr_stage_seconds_total`` is the service's own profile, a hook point for profilers and
the benchmark: the stages are listed in :mod:`pipeline.runtime.stats` (``main:rate``,
``decode:decode_batch``, ``writer:files-written``, ...) and also summed in
``RunStats.stage_seconds``.

Once everything consumed has been flushed,
``consumed == rated + sum(dead_lettered over reasons)`` (the R1 balance).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

#: Upper bounds (seconds) of the batch and flush latency histograms.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Upper bounds (seconds) of the event-to-lake latency histogram.
EVENT_TO_LAKE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class CacheCounts(Protocol):
    """What the cache collector reads: the enricher's cumulative lookup counts."""

    hits: int
    misses: int


class _BulkHistogram(Collector):
    """A label-less histogram that takes a whole array of observations per call.

    ``prometheus_client.Histogram.observe`` takes one value; this takes thousands in
    one ``numpy`` pass (``searchsorted`` + ``bincount``), for per-event latencies.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._doc = documentation
        self._bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)  # last one: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add every value of ``values`` (seconds) as one observation each."""
        if values.size == 0:
            return
        # bucket i holds bounds[i-1] < v <= bounds[i]: Prometheus' ``le`` is inclusive
        index = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(index, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        labels = [repr(float(b)) for b in self._bounds.tolist()] + ["+Inf"]
        yield HistogramMetricFamily(
            self._name,
            self._doc,
            buckets=list(zip(labels, (float(c) for c in cumulative), strict=True)),
            sum_value=total,
        )


class _CacheCollector(Collector):
    """Enrichment cache hits, misses and hit ratio, read at scrape time."""

    def __init__(self) -> None:
        self.source: CacheCounts | None = None

    def collect(self) -> Iterator[Metric]:
        hits = self.source.hits if self.source is not None else 0
        misses = self.source.misses if self.source is not None else 0
        total = hits + misses
        yield CounterMetricFamily(
            "cdr_enrichment_cache_hits",
            "LNP lookups of origin numbers answered from the local cache.",
            value=hits,
        )
        yield CounterMetricFamily(
            "cdr_enrichment_cache_misses",
            "LNP lookups of origin numbers that went to Redis.",
            value=misses,
        )
        yield GaugeMetricFamily(
            "cdr_enrichment_cache_hit_ratio",
            "hits / (hits + misses) of the enrichment cache since start; 0 before any lookup.",
            value=hits / total if total else 0.0,
        )


class ServiceMetrics:
    """The metrics of one :class:`~pipeline.runtime.service.StreamingService`.

    Thread-safety: updates come from the service's loop, reads (:meth:`render`) from
    the HTTP thread; ``prometheus_client`` metrics and the collectors here are safe
    for that.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.consumed = Counter(
            "cdr_events_consumed",
            "Kafka messages taken into a decode/enrich/rate batch.",
            ["topic"],
            registry=r,
        )
        self.rated = Counter(
            "cdr_events_rated",
            "Rated records written to the lake (committed with their offsets).",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "cdr_events_dead_lettered",
            "Dead letters acknowledged by the dead-letter topic, by reason code.",
            ["topic", "reason"],
            registry=r,
        )
        self.files = Counter(
            "cdr_files_written",
            "Lake commits (one per flush; rows + offset).",
            ["topic"],
            registry=r,
        )
        self.flushes = Counter(
            "cdr_flushes", "Offset ranges flushed (dead letters, one lake commit).", ["topic"],
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "cdr_batch_seconds",
            "Seconds to decode, enrich and rate one poll batch (including retries while paused).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.flush_seconds = Histogram(
            "cdr_flush_seconds",
            "Seconds to flush one partition range: dead letters, lake commit.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lake_commit_seconds = Histogram(
            "cdr_lake_commit_seconds",
            "Seconds of one lake commit: a flush's rows and offset in one Delta commit.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.event_to_lake = _BulkHistogram(
            "cdr_event_to_lake_seconds",
            "Seconds from an event's Kafka message timestamp to its range being durable.",
            EVENT_TO_LAKE_BUCKETS,
        )
        r.register(self.event_to_lake)
        self.lag = Gauge(
            "cdr_consumer_lag",
            "Messages behind: cached high watermark minus the consumer position.",
            ["topic", "partition"],
            registry=r,
        )
        self.durable_offset = Gauge(
            "cdr_last_durable_offset",
            "Last offset of the partition that is durable in the lake (inclusive).",
            ["topic", "partition"],
            registry=r,
        )
        self.paused = Gauge(
            "cdr_consumption_paused",
            "1 while consumption is paused because a dependency (Redis, Kafka, lake) failed.",
            registry=r,
        )
        self.fenced = Counter(
            "cdr_ranges_fenced",
            "Offset ranges the lake refused because another member committed the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.stage_seconds = Counter(
            "cdr_stage_seconds",
            "Wall seconds the service spent per stage (see pipeline.runtime.stats).",
            ["stage"],
            registry=r,
        )
        self._cache = _CacheCollector()
        r.register(self._cache)

    # ------------------------------------------------------------------ updates
    def watch_cache(self, source: CacheCounts) -> None:
        """Report ``source.hits`` / ``source.misses`` (read at each scrape)."""
        self._cache.source = source

    def batch_processed(self, topic: str, messages: int, seconds: float) -> None:
        """One poll batch of ``messages`` messages took ``seconds``."""
        self.consumed.labels(topic).inc(messages)
        self.batch_seconds.observe(seconds)

    def flushed(
        self,
        topic: str,
        partition: int,
        *,
        last: int,
        rated: int,
        dead_reasons: pa.ChunkedArray | pa.Array,
        files: int,
        seconds: float,
        event_to_lake_s: npt.NDArray[np.float64],
    ) -> dict[str, int]:
        """One range of ``partition`` up to offset ``last`` (inclusive) is durable.

        ``dead_reasons`` is the reason column of its dead letters. Returns the dead
        letters counted by reason (so the caller need not count them again).
        """
        by_reason = count_reasons(dead_reasons)
        self.rated.labels(topic).inc(rated)
        for reason, n in by_reason.items():
            self.dead_lettered.labels(topic, reason).inc(n)
        self.files.labels(topic).inc(files)
        self.flushes.labels(topic).inc()
        self.flush_seconds.observe(seconds)
        self.event_to_lake.observe_many(event_to_lake_s)
        self.durable_offset.labels(topic, str(partition)).set(last)
        return by_reason

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def forget_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop the per-partition gauges of partitions this member no longer owns (the
        new owner reports them)."""
        for p in partitions:
            for gauge in (self.lag, self.durable_offset):
                with contextlib.suppress(KeyError):  # never set on this member
                    gauge.remove(topic, str(p))

    # ------------------------------------------------------------------ exposition
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (body, content type) for an HTTP ``Accept`` header: the
        Prometheus text format, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def count_reasons(reasons: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """``{reason: count}`` of a reason column, in one Arrow pass."""
    if len(reasons) == 0:
        return {}
    counted = pc.value_counts(reasons)
    values = counted.field("values").to_pylist()
    counts = counted.field("counts").to_pylist()
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
