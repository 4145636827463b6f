"""Vacuum: ``cdr-pipeline lake vacuum``.

**Vacuum** (:func:`vacuum_lake`) deletes the data files that no live version lists
any more (compacted away, invoice partitions a re-close replaced) and that were
removed longer than ``retain_hours`` ago. It ends time travel past that horizon:
``close-cycle --as-of`` of a version older than ``retain_hours`` cannot be
reproduced afterwards, and a reader that opened a version older than the horizon
fails on a missing file. Below :data:`SAFE_RETAIN_HOURS` (one week, Delta's default
``delta.deletedFileRetentionDuration``) it is refused unless forced.

Errors: a retention refused by :func:`check_retention` (or by a table's own
``delta.deletedFileRetentionDuration``) is :class:`ConfigError`, checked before
anything is read; a lake that cannot be reached is :class:`SinkError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from deltalake.exceptions import DeltaError

from pipeline.errors import ConfigError
from pipeline.lake.handles import open_fresh
from pipeline.lake.lake import Lake
from pipeline.lake.storage import describe_error
from pipeline.lake.tables import DEAD, INVOICES, RATED

#: ``lake vacuum`` refuses a shorter retention unless forced (Delta's default).
SAFE_RETAIN_HOURS = 168
#: ``lake vacuum --full`` refuses a shorter retention even when forced: a file a
#: running writer has written but not yet committed would look unreferenced.
FULL_MIN_RETAIN_HOURS = 1


@dataclass(frozen=True)
class Vacuum:
    """What :func:`vacuum_lake` removed (or would remove) from one table."""

    table: str
    files: list[str] = field(default_factory=list)
    dry_run: bool = False


def check_retention(retain_hours: int, *, force: bool, full: bool) -> None:
    """Refuse (:class:`ConfigError`) a retention shorter than :data:`SAFE_RETAIN_HOURS`
    unless ``force``, and a ``full`` vacuum under :data:`FULL_MIN_RETAIN_HOURS` always."""
    if retain_hours < 0:
        raise ConfigError(f"--retain-hours {retain_hours}: must be 0 or more")
    if full and retain_hours < FULL_MIN_RETAIN_HOURS:
        raise ConfigError(
            f"--retain-hours {retain_hours} with --full: a data file a running writer has "
            "written but not yet committed would be deleted (its rows lost); give "
            f"--retain-hours {FULL_MIN_RETAIN_HOURS} or more"
        )
    if retain_hours < SAFE_RETAIN_HOURS and not force:
        raise ConfigError(
            f"--retain-hours {retain_hours} is below the safe minimum of "
            f"{SAFE_RETAIN_HOURS} hours (7 days): a reader still scanning an older version "
            "would fail on a deleted file, and versions older than the horizon could no "
            "longer be read (close-cycle --as-of, time travel). Pass --force to accept that"
        )


def vacuum_lake(
    lake: Lake,
    retain_hours: int,
    *,
    dry_run: bool = False,
    force: bool = False,
    full: bool = False,
    names: Iterable[str] = (RATED, DEAD, INVOICES),
) -> list[Vacuum]:
    """Delete (``dry_run``: list) the data files of tables ``names`` that no version
    newer than ``retain_hours`` lists (see the module docstring); ``full`` also deletes
    files no commit ever listed (left by writers stopped before their commit) older than
    the retention, listing every file of the table. After a real vacuum each table gets
    a log checkpoint and its expired log entries (older than
    ``delta.logRetentionDuration``, 30 days by default) are cleaned up.

    :class:`ConfigError` for a retention refused by :func:`check_retention` (checked
    before anything is read)."""
    check_retention(retain_hours, force=force, full=full)
    done = []
    for name in names:
        table = open_fresh(lake, name)
        if table is None:
            continue
        try:
            files = table.vacuum(
                retention_hours=retain_hours,
                dry_run=dry_run,
                enforce_retention_duration=not force,
                full=full,
            )
            if not dry_run:
                table.create_checkpoint()
                table.cleanup_metadata()
        except (OSError, DeltaError) as exc:
            text = " ".join(str(exc).split())
            if "retention" in text.lower():  # the table's own deletedFileRetentionDuration
                raise ConfigError(
                    f"{lake.table_uri(name)}: {text[:300]} (pass --force to go below it)"
                ) from None
            raise describe_error(exc, lake.storage, "vacuuming") from None
        done.append(Vacuum(name, sorted(files), dry_run))
    return done
