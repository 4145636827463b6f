"""Reading the lake: table versions (:class:`Snapshot`) and the reads of ``Lake``.

:class:`LakeReaders` adds to :class:`~pipeline.lake.handles.LakeHandles` every read
of :class:`~pipeline.lake.lake.Lake`: datasets of the files live at a version (time
travel), row counts from file metadata, the live files, and projected, filtered scans
in which a nullable column a table (version) lacks, added since by schema evolution,
reads as nulls. Reads never write and never create a table: an absent table reads as
empty (or None where documented).

Errors: a version that does not exist or whose log was cleaned up, and a data file
that cannot be read (:func:`unreadable_file`), are :class:`ConfigError`; a table
that cannot be reached is :class:`SinkError` (see
:func:`pipeline.lake.storage.describe_error`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.errors import ConfigError
from pipeline.io.dead_letter_codec import dead_letter_key
from pipeline.lake.handles import LakeHandles
from pipeline.lake.storage import describe_error
from pipeline.lake.tables import DEAD, INVOICES, PARTITION, RATED, TABLES


def unreadable_file(table_uri: str, exc: BaseException) -> ConfigError:
    """The refusal for a data file of ``table_uri`` that cannot be read (``exc``)."""
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return ConfigError(
        f"a data file of {table_uri} cannot be read ({reason}): restore it, "
        "or re-run the command that wrote it"
    )


class Snapshot:
    """One version of one table of a lake (:meth:`LakeReaders.snapshot`)."""

    def __init__(self, lake: LakeHandles, name: str, table: DeltaTable) -> None:
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


class LakeReaders(LakeHandles):
    """The reads of a lake (see the module docstring); :class:`~pipeline.lake.lake.Lake`
    adds the writes."""

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
        columns = [c for c in TABLES[DEAD].schema.names if c.startswith("source_")]
        return {dead_letter_key(r) for r in self._scan(DEAD, columns).to_pylist()}

    def read_invoice_lines(self, cycle: str, version: int | None = None) -> pa.Table:
        """The invoice lines of one cycle, as of ``version`` of ``invoice_lines`` (time
        travel; default: the latest). Lines closed before ``rated_calls_version`` was
        recorded have it null."""
        return self._scan(
            INVOICES, TABLES[INVOICES].schema.names, pads.field(PARTITION) == cycle, version
        )
