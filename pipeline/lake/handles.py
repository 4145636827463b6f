"""The lake's tables as handles: where they are, opening and creating them.

:class:`LakeHandles` is the base of :class:`~pipeline.lake.lake.Lake`: it resolves the
lake's location and storage, keeps one ``DeltaTable`` handle per table (refreshed to
the latest version before each use), creates absent tables on request (a concurrent
creator's table is used as is) and refuses a lake of the old plain-Parquet layout
(:class:`ConfigError`, nothing written). Reads are :mod:`pipeline.lake.readers`,
writes :mod:`pipeline.lake.lake`.

Errors: a table that cannot be reached is :class:`SinkError` (retry); refused
credentials, a missing bucket or the legacy layout are :class:`ConfigError` (see
:func:`pipeline.lake.storage.describe_error`). Not meant to be shared between threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Self

import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pipeline.errors import ConfigError, PipelineError
from pipeline.lake.location import LakeLocation, parse_location
from pipeline.lake.storage import BlobStore, Storage, describe_error
from pipeline.lake.tables import DEAD, DEAD_PAYLOADS, RATED, TABLES, TableSpec, configuration
from pipeline.settings import LakeSettings


class LakeHandles:
    """The tables of a lake at a local directory or ``s3://bucket/prefix``.

    ``settings``: the object store of an S3 lake (default: the lake section of the
    settings, ``CDR_LAKE__*`` then ``AWS_*``). Table handles are kept and refreshed
    before each use; one instance is not meant to be shared between threads.
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

    def check_writable(self, names: Iterable[str] = (RATED, DEAD)) -> Self:
        """Refuse (:class:`ConfigError`, nothing written) a local ``LAKE`` that is a file
        and tables ``names`` of the old plain-Parquet layout."""
        path = self.location.path
        if path is not None and path.exists() and not path.is_dir():
            raise ConfigError(f"{path} exists and is not a directory (the lake)")
        for name in names:
            if name not in self._handles:
                self._refuse_legacy(name)
        return self

    def create_tables(self, names: Iterable[str] = (RATED, DEAD)) -> Self:
        """Create the tables ``names`` if absent (before parallel writers start), after
        :meth:`check_writable`."""
        self.check_writable(names)
        for name in names:
            self._open(name, create=True)
        return self

    def exists(self) -> bool:
        """True if the lake has a ``rated_calls`` table."""
        return self._open(RATED, create=False) is not None

    def require_existing(self) -> Self:
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


def open_fresh(lake: LakeHandles, name: str) -> DeltaTable | None:
    """A fresh handle of table ``name`` at its latest version, not the lake's kept one
    (None: no such table); for upkeep that commits on its own (compaction, vacuum)."""
    try:
        return DeltaTable(lake.table_uri(name), storage_options=lake.storage.delta_options())
    except TableNotFoundError:
        return None
    except (OSError, DeltaError) as exc:
        raise describe_error(exc, lake.storage, "opening") from None
