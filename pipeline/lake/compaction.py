"""Compaction: ``cdr-pipeline lake compact`` (and the service's background compactor).

**Compaction** (:func:`compact_table`) rewrites the small files of a table partition
(the streaming service commits one file per partition flush, every few seconds) into
files of about ``target_size``: consecutive small files (oldest first) are packed
into bins of at most ``target_size`` input bytes, each bin is streamed into one new
Parquet file (the table's writer properties; its Delta statistics are the merge of
the inputs': min of the minima, max of the maxima, sums of counts), and ONE Delta
commit per partition removes the small files and adds the new ones, both with
``dataChange = false``, together with the application transaction
``compact:<table>[:<cycle>]``. Readers see the version before it or the version
after it, never both sets of files (no row twice, none missing), and a reader still
scanning an older version keeps its files until they are vacuumed.

Why not ``deltalake``'s ``optimize.compact``: with ``deltalake`` 1.6 two concurrent
optimizes of the same partition BOTH commit (its conflict checker lets a transaction
remove files a concurrent ``dataChange = false`` commit already removed), so the rows
of the rewritten files appear twice; and ``optimize`` drops the application
transactions of its commit properties, so it cannot be fenced. Measured and kept as
a test (``tests/unit/test_lake_maintenance.py``); see ``docs/decisions.md``.

Concurrent writers: the commit only removes files that were live in the version it
read. ``deltalake`` lets it land after concurrent *appends* (the streaming members'
flushes, ``rate``), rebasing over them, and the appends never fail because of it.
The members' application transactions (``<topic>+<partition>``) are untouched. Two
compactions of the same partition carry the same application id, so the second to
commit conflicts (``CommitFailedError``): nothing of it lands, its new files are
deleted, and it starts again from the new version (where it usually finds nothing
left to do), up to ``attempts`` times. Before committing it also checks that every
file it removes is still live (a compaction by another engine, which this fence does
not cover, makes it give up the attempt).

Errors: :class:`CompactionConflict` after ``attempts`` lost races (exit 3, run it
again), :class:`SinkError` when the lake cannot be reached, :class:`ConfigError` for a
table that is not compacted or does not exist. Statistics of the new files:
:mod:`pipeline.lake.stats_merge`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction

from pipeline.errors import ConfigError, PipelineError, SinkError
from pipeline.lake.handles import open_fresh
from pipeline.lake.lake import Lake
from pipeline.lake.stats_merge import merged_stats
from pipeline.lake.storage import describe_error
from pipeline.lake.tables import (
    DEAD,
    PARTITION,
    PLAIN,
    RATED,
    STATISTICS,
    TABLES,
    TableSpec,
)

LOG = logging.getLogger(__name__)

#: The tables ``lake compact`` rewrites (``invoice_lines`` is written whole per close).
COMPACTABLE = (RATED, DEAD)
#: Default compaction target: about 128 MiB per file.
DEFAULT_TARGET_SIZE = 128 * 1024 * 1024
#: A partition is compacted when it has at least this many files below the target.
DEFAULT_MIN_FILES = 2
#: Compaction attempts before giving up (each after a lost race).
COMPACT_ATTEMPTS = 5
#: Rows per row group of a compacted file (as :func:`~pipeline.lake.tables.writer_properties`).
ROW_GROUP_ROWS = 256 * 1024


class CompactionConflict(SinkError):
    """The compaction lost its race ``attempts`` times in a row: nothing of it is
    committed; run it again later (an infrastructure-like condition: exit 3)."""


class _LostRace(Exception):
    """One attempt must start again from the table's new version."""


@dataclass(frozen=True)
class Compaction:
    """What one compaction of one table partition did."""

    table: str
    #: The billing cycle compacted (None: an unpartitioned table).
    cycle: str | None
    #: Live files of the partition in the version the (last) attempt read.
    files_before: int
    #: ``files_before - removed + added`` (files appended concurrently not counted).
    files_after: int
    removed: int
    added: int
    seconds: float
    #: The table version the compaction committed (None: nothing to do).
    version: int | None
    attempts: int = 1

    @property
    def where(self) -> str:
        return self.table if self.cycle is None else f"{self.table} {PARTITION}={self.cycle}"

    def describe(self) -> str:
        if self.version is None:
            return (
                f"{self.where}: {self.files_before:,} files, nothing to compact "
                f"({self.seconds:.1f} s)"
            )
        return (
            f"{self.where}: {self.files_before:,} files -> {self.files_after:,} "
            f"({self.removed:,} rewritten as {self.added:,}) in {self.seconds:.1f} s, "
            f"version {self.version}"
            + (f" after {self.attempts - 1} lost race(s)" if self.attempts > 1 else "")
        )


def compaction_app_id(name: str, cycle: str | None) -> str:
    """The application id every compaction of one partition commits with (the fence)."""
    return f"compact:{name}" if cycle is None else f"compact:{name}:{cycle}"


def _actions(table: DeltaTable, cycle: str | None) -> pa.Table:
    """The add actions (flattened: path, size_bytes, num_records, min.*, max.*,
    null_count.*) of the live files of ``cycle``'s partition, oldest first."""
    actions = pa.table(table.get_add_actions(flatten=True))
    column = f"partition.{PARTITION}"
    if cycle is not None and column in actions.column_names:
        actions = actions.filter(pc.equal(actions.column(column), cycle))
    return actions.sort_by([("modification_time", "ascending"), ("path", "ascending")])


def small_files(table: DeltaTable, cycle: str | None, target_size: int) -> tuple[int, int]:
    """``(live files, files smaller than target_size)`` of the partition."""
    files = _actions(table, cycle)
    small = pc.sum(pc.less(files.column("size_bytes"), target_size)).as_py() or 0
    return files.num_rows, int(small)


def table_cycles(lake: Lake, name: str = RATED) -> list[str]:
    """The billing cycles table ``name`` has live files in, ascending."""
    table = open_fresh(lake, name)
    if table is None or PARTITION not in TABLES[name].partition_by:
        return []
    return sorted({str(p[PARTITION]) for p in table.partitions()})


def _bins(files: pa.Table, target_size: int) -> list[pa.Table]:
    """Consecutive runs of files smaller than ``target_size`` whose sizes add up to at
    most ``target_size``; runs of one file are left alone."""
    sizes = files.column("size_bytes").to_pylist()
    bins: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if size >= target_size:  # big enough: ends the run
            bins.append([])
            total = 0
            continue
        if total + size > target_size and bins[-1]:
            bins.append([])
            total = 0
        bins[-1].append(i)
        total += size
    return [files.take(pa.array(b, pa.int64())) for b in bins if len(b) >= 2]


# ---------------------------------------------------------------------- rewrite
def _file_schema(spec: TableSpec) -> pa.Schema:
    """The columns in a data file: the table's, without the partition columns."""
    return pa.schema([f for f in spec.schema if f.name not in spec.partition_by])


def _write_bin(
    fs: pafs.FileSystem,
    spec: TableSpec,
    files: pa.Table,
    cycle: str | None,
    *,
    use_threads: bool,
) -> AddAction:
    """Stream the rows of ``files`` (paths relative to the table) into one new file of
    the partition; returns its add action (``dataChange`` false, merged statistics)."""
    schema = _file_schema(spec)
    folder = f"{PARTITION}={cycle}/" if cycle is not None else ""
    path = f"{folder}part-compact-{uuid.uuid4()}-c000.zstd.parquet"
    source = pads.dataset(
        files.column("path").to_pylist(), schema=schema, format="parquet", filesystem=fs
    )
    stats_columns = [c for c in STATISTICS if c in schema.names]
    with (
        fs.open_output_stream(path) as sink,
        pq.ParquetWriter(
            sink,
            schema,
            compression="zstd",
            use_dictionary=[c for c in schema.names if c not in PLAIN],
            write_statistics=stats_columns,
        ) as writer,
    ):
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in source.to_batches(use_threads=use_threads, batch_readahead=2):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
                pending, rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
    size = fs.get_file_info(path).size
    return AddAction(
        path=path,
        size=int(size or 0),
        partition_values={PARTITION: cycle} if cycle is not None else {},
        modification_time=int(time.time() * 1000),
        data_change=False,
        stats=merged_stats(files, stats_columns),
    )


def _attempt(
    lake: Lake,
    name: str,
    table: DeltaTable,
    cycle: str | None,
    target_size: int,
    *,
    use_threads: bool,
) -> tuple[int, int, int | None]:
    """One compaction of the partition from ``table``'s version: ``(removed, added,
    committed version)``. Raises :class:`_LostRace` (nothing committed, new files
    deleted)."""
    spec = TABLES[name]
    read_version = table.version()
    bins = _bins(_actions(table, cycle), target_size)
    if not bins:
        return 0, 0, None
    fs = lake.storage.subtree(name)
    adds: list[AddAction] = []
    try:
        for files in bins:
            adds.append(_write_bin(fs, spec, files, cycle, use_threads=use_threads))
        removed = pa.concat_tables(bins)
        now = int(time.time() * 1000)
        removes = [
            RemoveAction(
                path=path,
                data_change=False,
                deletion_timestamp=now,
                size=size,
                partition_values={PARTITION: cycle} if cycle is not None else {},
            )
            for path, size in zip(
                removed.column("path").to_pylist(),
                removed.column("size_bytes").to_pylist(),
                strict=True,
            )
        ]
        table.update_incremental()
        live = set(_actions(table, cycle).column("path").to_pylist())
        if not set(removed.column("path").to_pylist()) <= live:
            raise _LostRace("some of its files were removed by another commit meanwhile")
        try:
            table.create_write_transaction(
                [*adds, *removes],
                mode="append",
                schema=spec.schema,
                partition_by=list(spec.partition_by) or None,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(compaction_app_id(name, cycle), read_version)],
                    custom_metadata={"cdr.operation": "compact", "cdr.readVersion": read_version},
                ),
            )
        except CommitFailedError as exc:
            raise _LostRace(" ".join(str(exc).split())[:200]) from exc
    except BaseException:
        for add in adds:  # never committed: nobody can have read them
            try:
                fs.delete_file(add.path)
            except OSError:
                LOG.warning("could not delete %s/%s (lake vacuum --full will)", name, add.path)
        raise
    return removed.num_rows, len(adds), table.version()


def compact_table(
    lake: Lake,
    name: str,
    *,
    cycle: str | None = None,
    target_size: int = DEFAULT_TARGET_SIZE,
    min_files: int = DEFAULT_MIN_FILES,
    use_threads: bool = True,
    attempts: int = COMPACT_ATTEMPTS,
    backoff_s: float = 1.0,
) -> Compaction:
    """Compact one partition of table ``name`` (``cycle``'s for ``rated_calls``; the
    whole table for ``dead_letters``) if it has at least ``min_files`` files smaller
    than ``target_size`` (see the module docstring for concurrency). ``use_threads``:
    let Arrow decode and encode on several threads.

    Raises :class:`CompactionConflict` after ``attempts`` lost races,
    :class:`SinkError` when the lake cannot be reached, :class:`ConfigError` for a
    table that does not exist or a ``cycle`` on an unpartitioned table."""
    if name not in COMPACTABLE:
        raise ConfigError(f"{name} is not compacted (tables: {', '.join(COMPACTABLE)})")
    if cycle is not None and PARTITION not in TABLES[name].partition_by:
        raise ConfigError(f"{name} is not partitioned by {PARTITION}: no --cycle for it")
    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        table = open_fresh(lake, name)
        if table is None:
            raise ConfigError(f"{lake.table_uri(name)} does not exist: nothing to compact")
        before, small = small_files(table, cycle, target_size)
        if small < max(min_files, 2):
            return Compaction(
                name, cycle, before, before, 0, 0, time.perf_counter() - started, None, attempt
            )
        try:
            removed, added, version = _attempt(
                lake, name, table, cycle, target_size, use_threads=use_threads
            )
        except _LostRace as exc:
            LOG.info(
                "compaction of %s%s lost a race (attempt %d of %d): %s",
                name,
                f" {PARTITION}={cycle}" if cycle else "",
                attempt,
                attempts,
                exc,
            )
            if attempt < attempts:
                time.sleep(backoff_s * attempt)
            continue
        except PipelineError:
            raise
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, lake.storage, "compacting") from None
        return Compaction(
            name,
            cycle,
            before,
            before - removed + added,
            removed,
            added,
            time.perf_counter() - started,
            version,
            attempt,
        )
    raise CompactionConflict(
        f"compaction of {lake.table_uri(name)}"
        + (f" {PARTITION}={cycle}" if cycle else "")
        + f" lost {attempts} races in a row to concurrent commits; nothing of it was "
        "committed: run it again"
    )


def compact_lake(
    lake: Lake,
    names: Iterable[str] = COMPACTABLE,
    *,
    cycles: Iterable[str] | None = None,
    target_size: int = DEFAULT_TARGET_SIZE,
    min_files: int = DEFAULT_MIN_FILES,
    use_threads: bool = True,
) -> list[Compaction]:
    """:func:`compact_table` of every partition of tables ``names``: ``rated_calls``
    per cycle (only ``cycles`` if given), ``dead_letters`` whole. One commit per
    partition, so a lost race costs one partition's work. Absent tables are skipped."""
    done = []
    for name in names:
        if open_fresh(lake, name) is None:
            continue
        if PARTITION in TABLES[name].partition_by:
            targets: list[str | None] = list(cycles if cycles is not None else table_cycles(lake))
        else:
            targets = [None]
        for cycle in targets:
            done.append(
                compact_table(
                    lake,
                    name,
                    cycle=cycle,
                    target_size=target_size,
                    min_files=min_files,
                    use_threads=use_threads,
                )
            )
    return done
