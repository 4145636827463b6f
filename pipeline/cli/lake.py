"""The lake maintenance commands: ``lake convert``, ``lake compact``, ``lake vacuum``.

Contract: compact and vacuum work on an existing lake only (``--lake``, else the
``output`` setting; never created here) and check every argument (size, hours, cycle,
table) before the lake is read, so a refusal (exit 2) deletes and rewrites nothing.
The work is :mod:`pipeline.lake.convert` and :mod:`pipeline.lake.compaction` and :mod:`pipeline.lake.vacuum`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from pipeline.cli.common import lake_from_arg
from pipeline.errors import ConfigError
from pipeline.observability import console

if TYPE_CHECKING:
    from pipeline.lake.lake import Lake


def cmd_lake_convert(args: argparse.Namespace) -> int:
    from pipeline.lake.convert import convert_lake

    converted = convert_lake(lake_from_arg(args, args.lake, "LAKE"))
    for name, files in converted.items():
        console.print(f"converted {name}: a Delta table of {files:,} data files")
    return 0


def _maintained_lake(args: argparse.Namespace) -> Lake:
    """``--lake``, else the ``output`` setting (``CDR_OUTPUT``, ``--config``): an
    existing lake (never created here)."""
    from pipeline.lake.lake import Lake
    from pipeline.settings import load_settings

    if args.lake is not None:
        return lake_from_arg(args, args.lake, "--lake").require_existing()
    config = getattr(args, "config", None)
    settings = load_settings(Path(config) if config else None)
    return Lake(settings.output, settings.lake).require_existing()


def cmd_lake_compact(args: argparse.Namespace) -> int:
    from pipeline.lake.compaction import COMPACTABLE, compact_lake, table_cycles
    from pipeline.lake.sizes import parse_size
    from pipeline.lake.tables import DEAD, RATED, check_cycle

    target = parse_size(args.target_size, "--target-size")
    cycle = check_cycle(args.cycle) if args.cycle is not None else None
    if cycle is not None and args.table == DEAD:
        raise ConfigError(f"--cycle: {DEAD} is not partitioned by cycle (use --table {RATED})")
    lake = _maintained_lake(args)
    if cycle is not None:
        known = table_cycles(lake, RATED)
        if cycle not in known:
            raise ConfigError(
                f"cycle {cycle} has no rated calls in {lake.uri} (cycles: "
                f"{', '.join(known) if known else 'none'})"
            )
    names = COMPACTABLE if args.table == "all" else (args.table,)
    for done in compact_lake(
        lake,
        names,
        cycles=None if cycle is None else [cycle],
        target_size=target,
    ):
        console.print(f"compacted {done.describe()}" if done.version else done.describe())
    return 0


def cmd_lake_vacuum(args: argparse.Namespace) -> int:
    from pipeline.lake.sizes import parse_hours
    from pipeline.lake.vacuum import check_retention, vacuum_lake

    hours = parse_hours(args.retain_hours, "--retain-hours")
    check_retention(hours, force=args.force, full=args.full)  # before the lake is read
    lake = _maintained_lake(args)
    for done in vacuum_lake(lake, hours, dry_run=args.dry_run, force=args.force, full=args.full):
        verb = "would remove" if done.dry_run else "removed"
        console.print(f"{done.table}: {verb} {len(done.files):,} unreferenced files")
        if done.dry_run:
            for path in done.files[:20]:
                console.print(f"  {escape(path)}", soft_wrap=True)
            if len(done.files) > 20:
                console.print(f"  ... and {len(done.files) - 20:,} more")
    return 0
