"""The lake: three Delta Lake tables and a folder of whole dead-letter payloads.

Layout (``LAKE`` is a directory or ``s3://bucket/prefix``)::

    LAKE/rated_calls/_delta_log/...                       the table's commits
    LAKE/rated_calls/billing_cycle=YYYY-MM/part-*.parquet its data files
    LAKE/dead_letters/_delta_log/..., part-*.parquet      (not partitioned)
    LAKE/invoice_lines/_delta_log/..., billing_cycle=YYYY-MM/part-*.parquet
    LAKE/dead_letter_payloads/<topic>+<partition>+<offset>.bin

A write is one Delta commit: readers see all of it or none of it, and only the files
the table's log lists as live (never a file a failed writer or a compaction left
behind). Exactly once without our own checkpoint files:

* streaming: :meth:`Lake.commit_partition` appends a flush's rows with the *application
  transaction* ``<topic>+<partition>`` set to the range's last offset, in the same
  commit; :meth:`Lake.resume_offset` reads it back. A member whose expectation of that
  version is stale (another member committed since) gets :class:`FencedError`.
* batch: :mod:`pipeline.batch` appends each chunk of an input file with the
  application transaction ``rate:<sha256>`` set to the chunks done, so a re-run
  skips what is there and completes the rest.

Errors: a table that cannot be reached is :class:`SinkError` (retry); refused
credentials, a missing bucket, a damaged data file or a lake of the old plain-Parquet
layout are :class:`ConfigError` (see :func:`pipeline.lake.storage.describe_error`).

Opening and creating the tables is :mod:`pipeline.lake.handles`, reading them
:mod:`pipeline.lake.readers`; this module adds the writes (:class:`Lake`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Field as DeltaField
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.schema import PrimitiveType

from pipeline.errors import ConfigError, FencedError, SinkError
from pipeline.lake.readers import LakeReaders
from pipeline.lake.storage import describe_error
from pipeline.lake.tables import (
    DEAD,
    INVOICES,
    PARTITION,
    RATED,
    TABLES,
    TableSpec,
    check_cycle,
    writer_properties,
)

LOG = logging.getLogger(__name__)


#: Delta type names of the columns schema evolution may add.
_DELTA_TYPES = {pa.int64(): "long", pa.string(): "string"}


def partition_app_id(topic: str, partition: int) -> str:
    """The application-transaction id of a topic-partition: ``<topic>+<partition>``."""
    return f"{topic}+{partition}"


def _conform(rows: pa.Table, spec: TableSpec) -> pa.Table:
    """``rows`` with the table's columns, order and types (names must match)."""
    return rows.select(spec.schema.names).cast(spec.schema)


class Lake(LakeReaders):
    """A lake at a local directory or ``s3://bucket/prefix`` (see the module docstring).

    ``settings``: the object store of an S3 lake (default: the lake section of the
    settings, ``CDR_LAKE__*`` then ``AWS_*``). Table handles are kept and refreshed
    before each use; one :class:`Lake` is not meant to be shared between threads.
    Opening and creating tables: :class:`~pipeline.lake.handles.LakeHandles`; reads:
    :class:`~pipeline.lake.readers.LakeReaders`; this class adds the writes.
    """

    def append(
        self, name: str, rows: pa.Table, transactions: Sequence[Transaction] = ()
    ) -> int | None:
        """Append ``rows`` to table ``name`` in one commit, with ``transactions``
        (application versions) recorded in the same commit. Nothing is committed for
        no rows and no transactions. Returns the new table version (or None)."""
        if rows.num_rows == 0 and not transactions:
            return None
        spec = TABLES[name]
        table = self._open(name, create=True)
        assert table is not None
        self._write(table, spec, rows, transactions)
        return table.version()

    def _write(
        self,
        table: DeltaTable,
        spec: TableSpec,
        rows: pa.Table,
        transactions: Sequence[Transaction],
        *,
        mode: str = "append",
        predicate: str | None = None,
    ) -> None:
        """One ``write_deltalake`` commit; :class:`CommitFailedError` passes through."""
        commit = CommitProperties(app_transactions=list(transactions)) if transactions else None
        data, props = _conform(rows, spec), writer_properties(spec)
        try:
            if mode == "overwrite":
                write_deltalake(
                    table,
                    data,
                    mode="overwrite",
                    predicate=predicate,
                    writer_properties=props,
                    commit_properties=commit,
                )
            else:
                write_deltalake(
                    table, data, mode="append", writer_properties=props, commit_properties=commit
                )
        except CommitFailedError:
            raise
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, self.storage, "writing to") from None

    def write_rated(self, rated: pa.Table, transactions: Sequence[Transaction] = ()) -> int | None:
        """Append rated records (:data:`RATED_SCHEMA`); see :meth:`append`."""
        return self.append(RATED, rated, transactions)

    def write_dead_letters(
        self, dead: pa.Table, transactions: Sequence[Transaction] = ()
    ) -> int | None:
        """Append dead letters (:data:`DEAD_LETTER_SCHEMA`); see :meth:`append`."""
        return self.append(DEAD, dead, transactions)

    def commit_partition(
        self,
        topic: str,
        partition: int,
        rated: pa.Table,
        first: int,
        last: int,
        *,
        expected: int | None,
    ) -> int:
        """Append a flush of ``topic[partition]`` (offsets ``first..last`` inclusive) as
        ONE commit of ``rated_calls`` that also sets the partition's application
        transaction (:func:`partition_app_id`) to ``last``. Returns the table version.

        ``expected``: the offset the table must hold for the partition before this
        commit (the caller's last commit, or ``resume_offset - 1`` at assignment; None:
        the table holds none). If it holds another, or another writer commits that
        partition concurrently, nothing is written and :class:`FencedError` is raised:
        the partition belongs to another member now; drop the buffer, do not retry.
        Other failures raise :class:`SinkError` (retry the same call).
        """
        if last < first or (expected is not None and first <= expected):
            raise ValueError(f"bad range {first}..{last} after {expected}")
        app = partition_app_id(topic, partition)
        table = self._open(RATED, create=True)
        assert table is not None
        held = table.transaction_version(app)
        if held != expected:
            raise FencedError(
                f"{topic}[{partition}] offsets={first}-{last} not committed: the lake holds "
                f"offset={held} for it, this member expected offset={expected} (another member "
                "owns the partition now)"
            )
        try:
            self._write(table, TABLES[RATED], rated, [Transaction(app_id=app, version=last)])
        except CommitFailedError as exc:
            self._handles.pop(RATED, None)
            now = self.transaction_version(RATED, app)
            if now != expected:
                raise FencedError(
                    f"{topic}[{partition}] offsets={first}-{last} not committed: another "
                    f"member committed offset={now} for it concurrently"
                ) from exc
            raise SinkError(f"commit of {topic}[{partition}] failed: {exc}") from exc
        return table.version()

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """The offset to resume ``topic[partition]`` at: one past the last offset
        committed to ``rated_calls`` (None: the lake holds none)."""
        held = self.transaction_version(RATED, partition_app_id(topic, partition))
        return None if held is None else held + 1

    def write_invoice_lines(self, lines: pa.Table, cycle: str) -> int:
        """Replace the cycle's invoice lines with ``lines`` in one commit (the
        partition ``billing_cycle = cycle`` is overwritten; other cycles untouched), so
        closing twice leaves the same lines. ``cycle`` must pass :func:`check_cycle`
        (:class:`ConfigError` before any write). Returns the table version."""
        check_cycle(cycle)
        others = (
            pc.sum(pc.not_equal(lines.column(PARTITION), cycle)).as_py() if lines.num_rows else 0
        )
        if others:
            raise ValueError(f"invoice lines of another cycle than {cycle}")
        table = self._open(INVOICES, create=True)
        assert table is not None
        self._evolve(table, TABLES[INVOICES])
        try:
            self._write(
                table,
                TABLES[INVOICES],
                lines,
                (),
                mode="overwrite",
                predicate=f"{PARTITION} = '{cycle}'",
            )
        except CommitFailedError as exc:
            raise SinkError(
                f"closing {cycle}: a concurrent close of the same cycle: {exc}"
            ) from exc
        return table.version()

    def _evolve(self, table: DeltaTable, spec: TableSpec) -> None:
        """Add to ``table`` the nullable columns of ``spec`` it lacks (a table created by
        an earlier version, e.g. ``invoice_lines`` before ``rated_calls_version``), in
        one commit of its own; older versions keep their schema (read back as nulls)."""
        have = set(table.schema().to_arrow().names)
        new = [f for f in spec.schema if f.name not in have]
        if not new:
            return
        if any(not f.nullable for f in new):
            raise ConfigError(
                f"{self.table_uri(spec.name)} lacks the required column(s) "
                f"{', '.join(f.name for f in new if not f.nullable)}: not a table of this version"
            )
        try:
            table.alter.add_columns(
                [
                    DeltaField(f.name, PrimitiveType(_DELTA_TYPES[f.type]), nullable=True)
                    for f in new
                ]
            )
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, self.storage, "writing to") from None
        LOG.info("table=%s schema evolved: added %s", spec.name, ", ".join(f.name for f in new))
