"""Scheduled compaction inside ``cdr-pipeline run`` (setting ``compaction.*``).

The streaming service commits one small file per partition flush (every
``batch.max_age_s`` seconds per partition: up to 17,280 files per partition a day).
With ``compaction.interval_s`` > 0, :func:`start` adds a background thread to the
service that every interval (plus a random 0-10 %) compacts the billing cycles this
member committed rows to since its last round, each one whose ``rated_calls``
partition has ``compaction.min_files`` files or more below ``compaction.target_size``
(:func:`pipeline.lake.compaction.compact_table`).

It never blocks the flush path: the thread has its own :class:`~pipeline.lake.lake.Lake`
handle, rewrites one file at a time on that thread alone (Arrow reads and writes
with the GIL released), and the compaction commit lands after the members'
concurrent flushes without failing them (see :mod:`pipeline.lake.compaction`).
The only thing the service's writer thread does for it is note the cycles of each
committed range (:class:`CycleRecorder`, a set union per flush).

Several members: each compacts only cycles it has written in the last interval, so
all members writing the current cycle may try it in the same interval; the random
delay spreads them, the first one's commit makes the others find few small files
left (nothing to do), and a compaction that loses a race to another member's is
tried once more and then skipped until the next round. Cycles nobody writes any more
are left to ``cdr-pipeline lake compact`` (the CronJob in ``deploy/k8s``).

Log line per compaction (``compacted table=... cycle=... files_before=...
files_after=... seconds=...``) and metrics in the service's registry:

=====================================  =========  =====================================
``cdr_compactions_total``              counter    outcome: ``compacted``, ``nothing``
                                                  (too few small files), ``lost-race``,
                                                  ``failed`` (lake unavailable: tried
                                                  again next round)
``cdr_compaction_seconds``             histogram  one compaction of one cycle
``cdr_compaction_files_removed_total`` counter    small files rewritten
``cdr_compaction_files_added_total``   counter    files written in their place
=====================================  =========  =====================================
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.errors import PipelineError
from pipeline.lake.compaction import Compaction, CompactionConflict, compact_table
from pipeline.lake.lake import Lake
from pipeline.lake.tables import PARTITION, RATED
from pipeline.runtime.ports import Flush, LakeTable, Mark
from pipeline.settings import CompactionSettings, LakeSettings

LOG = logging.getLogger(__name__)

#: Upper bounds (seconds) of the compaction duration histogram.
COMPACTION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Attempts of one scheduled compaction before it is skipped until the next round.
SCHEDULED_ATTEMPTS = 2


class CycleRecorder:
    """A :class:`~.ports.LakeTable` that commits through ``table`` and notes the
    billing cycles of every range it committed (for :class:`ScheduledCompaction`)."""

    def __init__(self, table: LakeTable) -> None:
        self.table = table
        self._cycles: set[str] = set()
        self._lock = threading.Lock()

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.table.resume_offset(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        done = self.table.commit(flush, mark)
        if flush.rated.num_rows and PARTITION in flush.rated.column_names:
            cycles = pc.unique(flush.rated.column(PARTITION)).to_pylist()
            with self._lock:
                self._cycles.update(str(c) for c in cycles if c is not None)
        return done

    def take(self) -> set[str]:
        """The cycles committed since the last call (and forget them)."""
        with self._lock:
            cycles, self._cycles = self._cycles, set()
        return cycles

    def note(self, cycles: set[str]) -> None:
        """Add ``cycles`` back (a round that could not compact them)."""
        with self._lock:
            self._cycles.update(cycles)


class CompactionMetrics:
    """The compaction metrics, in the service's registry (module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.runs = Counter(
            "cdr_compactions", "Scheduled compactions by outcome", ["outcome"], registry=r
        )
        self.seconds = Histogram(
            "cdr_compaction_seconds",
            "Seconds of one scheduled compaction of one cycle",
            buckets=COMPACTION_BUCKETS,
            registry=r,
        )
        self.removed = Counter(
            "cdr_compaction_files_removed", "Small files rewritten by compaction", registry=r
        )
        self.added = Counter(
            "cdr_compaction_files_added", "Files compaction wrote in their place", registry=r
        )


class ScheduledCompaction(threading.Thread):
    """The background thread of :func:`start` (a daemon: it ends with ``stopping``,
    after the compaction in progress, or with the process)."""

    def __init__(
        self,
        lake: Lake,
        settings: CompactionSettings,
        recorder: CycleRecorder,
        stopping: threading.Event,
        metrics: CompactionMetrics,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(name="lake-compaction", daemon=True)
        self.lake = lake
        self.settings = settings
        self.recorder = recorder
        self.stopping = stopping
        self.metrics = metrics
        self._jitter = jitter
        #: Every compaction done (tests and benchmarks read it).
        self.done: list[Compaction] = []

    def next_wait(self) -> float:
        return self.settings.interval_s * (1.0 + 0.1 * self._jitter())

    def run(self) -> None:
        while not self.stopping.wait(self.next_wait()):
            try:
                self.round()
            except Exception:  # never let the thread die: the next round tries again
                LOG.exception("scheduled compaction failed")

    def round(self) -> list[Compaction]:
        """Compact the cycles committed since the last round (one after the other)."""
        cycles = sorted(self.recorder.take())
        done = []
        for i, cycle in enumerate(cycles):
            if self.stopping.is_set():
                self.recorder.note(set(cycles[i:]))
                break
            result = self._compact(cycle)
            if result is not None:
                done.append(result)
        self.done.extend(done)
        return done

    def _compact(self, cycle: str) -> Compaction | None:
        s = self.settings
        try:
            result = compact_table(
                self.lake,
                RATED,
                cycle=cycle,
                target_size=s.target_bytes,
                min_files=s.min_files,
                use_threads=False,
                attempts=SCHEDULED_ATTEMPTS,
            )
        except CompactionConflict as exc:
            self.metrics.runs.labels("lost-race").inc()
            LOG.info("compaction skipped table=%s cycle=%s: %s", RATED, cycle, exc)
            return None
        except PipelineError as exc:
            self.metrics.runs.labels("failed").inc()
            self.recorder.note({cycle})
            LOG.warning("compaction failed table=%s cycle=%s: %s", RATED, cycle, exc)
            return None
        if result.version is None:
            self.metrics.runs.labels("nothing").inc()
            LOG.debug("compaction not needed table=%s cycle=%s files=%d", RATED, cycle,
                      result.files_before)  # fmt: skip
            return result
        self.metrics.runs.labels("compacted").inc()
        self.metrics.seconds.observe(result.seconds)
        self.metrics.removed.inc(result.removed)
        self.metrics.added.inc(result.added)
        LOG.info(
            "compacted table=%s cycle=%s files_before=%d files_after=%d removed=%d added=%d "
            "seconds=%.1f version=%d attempts=%d",
            RATED,
            cycle,
            result.files_before,
            result.files_after,
            result.removed,
            result.added,
            result.seconds,
            result.version,
            result.attempts,
        )
        return result


def start(
    lake_uri: str,
    lake_settings: LakeSettings,
    settings: CompactionSettings,
    recorder: CycleRecorder,
    stopping: threading.Event,
    registry: CollectorRegistry | None = None,
) -> ScheduledCompaction:
    """Start the scheduled compaction of the lake at ``lake_uri`` for the cycles
    ``recorder`` sees committed; it ends when ``stopping`` is set."""
    thread = ScheduledCompaction(
        Lake(lake_uri, lake_settings), settings, recorder, stopping, CompactionMetrics(registry)
    )
    thread.start()
    LOG.info(
        "scheduled compaction every %.0f s (cycles with %d+ files below %s)",
        settings.interval_s,
        settings.min_files,
        settings.target_size,
    )
    return thread
