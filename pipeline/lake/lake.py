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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Field as DeltaField
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.schema import PrimitiveType

from pipeline.errors import ConfigError, FencedError, PipelineError, SinkError
from pipeline.lake.location import LakeLocation, parse_location
from pipeline.lake.storage import BlobStore, Storage, describe_error
from pipeline.lake.tables import (
    DEAD,
    DEAD_PAYLOADS,
    INVOICES,
    PARTITION,
    RATED,
    TABLES,
    TableSpec,
    check_cycle,
    configuration,
    writer_properties,
)
from pipeline.settings import LakeSettings

LOG = logging.getLogger(__name__)


#: Delta type names of the columns schema evolution may add.
_DELTA_TYPES = {pa.int64(): "long", pa.string(): "string"}


def unreadable_file(table_uri: str, exc: BaseException) -> ConfigError:
    """The refusal for a data file of ``table_uri`` that cannot be read (``exc``)."""
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return ConfigError(
        f"a data file of {table_uri} cannot be read ({reason}): restore it, "
        "or re-run the command that wrote it"
    )


def partition_app_id(topic: str, partition: int) -> str:
    """The application-transaction id of a topic-partition: ``<topic>+<partition>``."""
    return f"{topic}+{partition}"


def _conform(rows: pa.Table, spec: TableSpec) -> pa.Table:
    """``rows`` with the table's columns, order and types (names must match)."""
    return rows.select(spec.schema.names).cast(spec.schema)


class Snapshot:
    """One version of one table of a lake (:meth:`Lake.snapshot`)."""

    def __init__(self, lake: Lake, name: str, table: DeltaTable) -> None:
        self.lake, self.name, self.table = lake, name, table
        self.version: int = table.version()

    def dataset(self) -> pads.Dataset:
        """A ``pyarrow`` dataset of the files live at this version."""
        try:
            return self.table.to_pyarrow_dataset(filesystem=self.lake.storage.subtree(self.name))
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, self.lake.storage, "reading") from None

    def count_rows(self, cycle: str) -> int:
        """Rows in ``cycle``'s partition, from the files' metadata (no data is read)."""
        try:
            return int(self.dataset().count_rows(filter=pads.field(PARTITION) == cycle))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise unreadable_file(self.lake.table_uri(self.name), exc) from None
        except OSError as exc:
            raise describe_error(exc, self.lake.storage, "reading") from None

    def local_files(self) -> dict[str, list[str]] | None:
        """The Parquet files live at this version by partition value (``billing_cycle``),
        as local paths any Parquet reader (DuckDB) can read whole: None for a lake in
        object storage, or a table whose files need Delta to be read right (deletion
        vectors, column mapping)."""
        if self.lake.location.path is None:
            return None
        features = set(self.table.protocol().reader_features or ())
        if features & {"deletionVectors", "columnMapping"}:
            return None
        try:
            uris = self.table.file_uris()
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, self.lake.storage, "reading") from None
        out: dict[str, list[str]] = {}
        for uri in uris:
            part = next(
                (seg for seg in uri.split("/") if seg.startswith(f"{PARTITION}=")),
                f"{PARTITION}=",
            )
            out.setdefault(part.split("=", 1)[1], []).append(uri)
        return out


class Lake:
    """A lake at a local directory or ``s3://bucket/prefix`` (see the module docstring).

    ``settings``: the object store of an S3 lake (default: the lake section of the
    settings, ``CDR_LAKE__*`` then ``AWS_*``). Table handles are kept and refreshed
    before each use; one :class:`Lake` is not meant to be shared between threads.
    """

    def __init__(
        self, root: str | Path | LakeLocation, settings: LakeSettings | None = None
    ) -> None:
        self.location = parse_location(root)
        self.storage = Storage.for_location(self.location, settings)
        #: Whole payloads of dead letters too big for the dead-letter topic.
        self.payloads = BlobStore(self.storage, DEAD_PAYLOADS)
        self._handles: dict[str, DeltaTable] = {}

    @property
    def uri(self) -> str:
        """The lake's root: an absolute path or ``s3://bucket/prefix``."""
        return self.location.uri

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def table_uri(self, name: str) -> str:
        return self.location.child(name)

    # ------------------------------------------------------------- tables
    def legacy_layout(self, name: str) -> bool:
        """True if ``LAKE/<name>`` holds files but no Delta log (the plain-Parquet
        layout of earlier versions)."""
        fs = self.storage.filesystem
        try:
            base = fs.get_file_info(self.location.key(name))
            if base.type != pafs.FileType.Directory:
                return False
            log = fs.get_file_info(self.location.key(f"{name}/_delta_log"))
            if log.type != pafs.FileType.NotFound:
                return False
            found = fs.get_file_info(pafs.FileSelector(self.location.key(name), recursive=True))
        except OSError:
            return False
        return any(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in found)

    def _refuse_legacy(self, name: str) -> None:
        if self.legacy_layout(name):
            raise ConfigError(
                f"{self.table_uri(name)} holds Parquet files but no Delta log: a lake of the "
                "plain-Parquet layout of earlier versions. Convert it once with "
                f"`cdr-pipeline lake convert {self.uri}` (docs/decisions.md)"
            )

    def _open(self, name: str, *, create: bool) -> DeltaTable | None:
        """The table ``name``, refreshed to its latest version; created (empty) if
        absent and ``create``, else None."""
        handle = self._handles.get(name)
        try:
            if handle is not None:
                handle.update_incremental()
                return handle
            try:
                handle = DeltaTable(self.table_uri(name), storage_options=self._options())
            except TableNotFoundError:
                self._refuse_legacy(name)
                if not create:
                    return None
                handle = self._create(TABLES[name])
        except PipelineError:
            raise
        except (OSError, DeltaError) as exc:
            raise describe_error(exc, self.storage, "opening") from None
        self._handles[name] = handle
        return handle

    def _options(self) -> dict[str, str]:
        return self.storage.delta_options()

    def _create(self, spec: TableSpec) -> DeltaTable:
        uri = self.table_uri(spec.name)
        try:
            return DeltaTable.create(
                uri,
                spec.schema,
                mode="ignore",
                partition_by=list(spec.partition_by) or None,
                name=spec.name,
                configuration=configuration(spec),
                storage_options=self._options(),
            )
        except (OSError, DeltaError) as exc:
            # another writer created it at the same moment: use theirs
            if DeltaTable.is_deltatable(uri, storage_options=self._options()):
                return DeltaTable(uri, storage_options=self._options())
            raise describe_error(exc, self.storage, "creating") from None

    def check_writable(self, names: Iterable[str] = (RATED, DEAD)) -> Lake:
        """Refuse (:class:`ConfigError`, nothing written) a local ``LAKE`` that is a file
        and tables ``names`` of the old plain-Parquet layout."""
        path = self.location.path
        if path is not None and path.exists() and not path.is_dir():
            raise ConfigError(f"{path} exists and is not a directory (the lake)")
        for name in names:
            if name not in self._handles:
                self._refuse_legacy(name)
        return self

    def create_tables(self, names: Iterable[str] = (RATED, DEAD)) -> Lake:
        """Create the tables ``names`` if absent (before parallel writers start), after
        :meth:`check_writable`."""
        self.check_writable(names)
        for name in names:
            self._open(name, create=True)
        return self

    def exists(self) -> bool:
        """True if the lake has a ``rated_calls`` table."""
        return self._open(RATED, create=False) is not None

    def require_existing(self) -> Lake:
        """``self`` if the lake exists and has a ``rated_calls`` table; :class:`ConfigError`
        otherwise (a mistyped ``--lake`` is refused, never created). Writes nothing."""
        path = self.location.path
        if path is not None and not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise ConfigError(f"lake {path} {what}: check --lake")
        if not self.exists():
            raise ConfigError(
                f"{self.uri} is not a lake with rated calls (no {RATED} table): "
                "check --lake, or rate some calls into it first"
            )
        return self

    def version(self, name: str) -> int | None:
        """The current version of table ``name`` (None: no such table)."""
        table = self._open(name, create=False)
        return None if table is None else table.version()

    def transaction_version(self, name: str, app_id: str) -> int | None:
        """The version the application ``app_id`` last committed to table ``name``."""
        table = self._open(name, create=False)
        return None if table is None else table.transaction_version(app_id)

    # ------------------------------------------------------------- writing
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

    # ------------------------------------------------------------- reading
    def dataset(self, name: str, version: int | None = None) -> pads.Dataset | None:
        """A ``pyarrow`` dataset of the live files of table ``name`` at its current
        version, or at ``version`` (time travel, see :meth:`snapshot`); None: no such
        table. Scans push projections and filters down."""
        if version is not None:
            found = self.snapshot(name, version)
            return None if found is None else found.dataset()
        table = self._open(name, create=False)
        return None if table is None else Snapshot(self, name, table).dataset()

    def snapshot(self, name: str, version: int | None = None) -> Snapshot | None:
        """Table ``name`` pinned at its current version, or at ``version`` (time travel:
        the files live at that commit), whatever is committed meanwhile; None: no such
        table.

        :class:`ConfigError` if ``version`` is negative, beyond the latest version, or
        no longer readable (its log was cleaned up); nothing is written."""
        table = self._open(name, create=False)
        if table is None:
            return None
        if version is not None and version != table.version():
            table = self._at_version(name, table.version(), version)
        else:  # pinned: a copy that later refreshes of the cached handle do not move
            table = self._at_version(name, table.version(), table.version())
        return Snapshot(self, name, table)

    def _at_version(self, name: str, latest: int, version: int) -> DeltaTable:
        """A handle of table ``name`` at ``version`` (not kept in ``_handles``)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(f"{version!r} is not a table version: expected a whole number >= 0")
        if version > latest:
            raise ConfigError(
                f"{self.table_uri(name)} has no version {version}: its latest version is {latest}"
            )
        try:
            return DeltaTable(
                self.table_uri(name), version=version, storage_options=self._options()
            )
        except DeltaError as exc:
            raise ConfigError(
                f"version {version} of {self.table_uri(name)} can no longer be read (its log "
                f"was cleaned up; latest version {latest}): {' '.join(str(exc).split())[:200]}"
            ) from None
        except OSError as exc:
            raise describe_error(exc, self.storage, "reading") from None

    def count_rows(self, name: str, cycle: str, version: int | None = None) -> int:
        """Rows of table ``name`` in ``cycle``'s partition (at ``version``), from the
        files' metadata (no data is read)."""
        data = self.dataset(name, version)
        if data is None:
            return 0
        try:
            return int(data.count_rows(filter=pads.field(PARTITION) == cycle))
        except (pa.ArrowInvalid, OSError) as exc:
            raise describe_error(exc, self.storage, "reading") from None

    def live_files(self, name: str, cycle: str | None = None) -> list[str]:
        """The data files (paths relative to the table) table ``name`` lists as live,
        optionally of one cycle's partition."""
        table = self._open(name, create=False)
        if table is None:
            return []
        actions = pa.table(table.get_add_actions(flatten=True))
        if cycle is not None and f"partition.{PARTITION}" in actions.column_names:
            actions = actions.filter(pc.equal(actions.column(f"partition.{PARTITION}"), cycle))
        return sorted(str(p) for p in actions.column("path").to_pylist())

    def newest_file_time(self, name: str, cycle: str | None = None) -> datetime | None:
        """When the newest live file of table ``name`` (of ``cycle``) was written."""
        table = self._open(name, create=False)
        if table is None:
            return None
        actions = pa.table(table.get_add_actions(flatten=True))
        if cycle is not None and f"partition.{PARTITION}" in actions.column_names:
            actions = actions.filter(pc.equal(actions.column(f"partition.{PARTITION}"), cycle))
        if actions.num_rows == 0:
            return None
        newest = pc.max(actions.column("modification_time")).as_py()
        if isinstance(newest, datetime):
            return newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        return datetime.fromtimestamp(int(newest) / 1000, UTC)

    def _scan(
        self,
        name: str,
        columns: list[str],
        where: pads.Expression | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """``columns`` of table ``name`` (at ``version``); a nullable column the table
        (version) lacks, added since by schema evolution, reads as nulls."""
        spec = TABLES[name]
        data = self.dataset(name, version)
        if data is None:
            return spec.schema.empty_table().select(columns)
        missing = [
            c for c in columns if c not in data.schema.names and spec.schema.field(c).nullable
        ]
        try:
            table = data.to_table(columns=[c for c in columns if c not in missing], filter=where)
            for column in missing:
                nulls = pa.nulls(table.num_rows, spec.schema.field(column).type)
                table = table.append_column(column, nulls)
            table = table.select(columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise unreadable_file(self.table_uri(name), exc) from None
        except OSError as exc:
            raise describe_error(exc, self.storage, "reading") from None
        schema = pa.schema([spec.schema.field(c) for c in columns])
        return table.cast(schema)

    def cycles(self) -> list[str]:
        """The billing cycles that have rated records, ascending."""
        table = self._open(RATED, create=False)
        if table is None:
            return []
        return sorted({str(p[PARTITION]) for p in table.partitions()})

    def read_rated(self, cycle: str, columns: Iterable[str] | None = None) -> pa.Table:
        """Every rated record (all revisions) of one cycle, columns as :data:`RATED_SCHEMA`."""
        cols = list(columns) if columns is not None else TABLES[RATED].schema.names
        return self._scan(RATED, cols, pads.field(PARTITION) == cycle)

    def max_revisions_outside(self, cycle: str) -> pa.Table:
        """``call_id`` and highest ``revision`` of calls rated in cycles other than ``cycle``."""
        rows = self._scan(RATED, ["call_id", "revision"], pads.field(PARTITION) != cycle)
        return (
            rows.group_by("call_id")
            .aggregate([("revision", "max")])
            .rename_columns(["call_id", "revision"])
        )

    def read_dead_letters(self) -> pa.Table:
        """Every dead letter in the lake."""
        return self._scan(DEAD, TABLES[DEAD].schema.names)

    def read_dead_letters_keys(self) -> set[str]:
        """The source identity (:func:`~pipeline.io.dead_letter_codec.dead_letter_key`)
        of every dead letter in the lake (only the ``source_*`` columns are read)."""
        from pipeline.io.dead_letter_codec import dead_letter_key

        columns = [c for c in TABLES[DEAD].schema.names if c.startswith("source_")]
        return {dead_letter_key(r) for r in self._scan(DEAD, columns).to_pylist()}

    def read_invoice_lines(self, cycle: str, version: int | None = None) -> pa.Table:
        """The invoice lines of one cycle, as of ``version`` of ``invoice_lines`` (time
        travel; default: the latest). Lines closed before ``rated_calls_version`` was
        recorded have it null."""
        return self._scan(
            INVOICES, TABLES[INVOICES].schema.names, pads.field(PARTITION) == cycle, version
        )
