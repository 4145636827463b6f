"""The batch commands: ``generate``, ``rate``, ``close-cycle``, ``query``, ``report``.

Contract: each ``cmd_*`` takes the parsed arguments of its command, prints a summary
on the console and returns an exit code (:mod:`pipeline.cli.common`); a refusal is a
:class:`~pipeline.errors.ConfigError` raised before anything is written, which
:func:`pipeline.cli.main` turns into exit 2. The work itself is done by
:mod:`pipeline.batch`, :mod:`pipeline.generate`, :mod:`pipeline.analytics` and
:mod:`pipeline.report`; nothing here rates or writes on its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.markup import escape

from pipeline.cli.common import (
    EXIT_UNREADABLE_INPUT,
    expand_inputs,
    lake_from_arg,
    load_reference,
    progress_bar,
)
from pipeline.errors import ConfigError
from pipeline.observability import console


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.generate import write_generated

    out = Path(args.output)
    if not out.parent.is_dir():
        raise ConfigError(f"--output {out}: directory {out.parent} does not exist")
    started = time.perf_counter()
    with progress_bar("generate", args.events, "ev") as advance:
        write_generated(
            out, args.events, seed=args.seed, refdata_dir=Path(args.refdata), progress=advance
        )
    console.print(f"wrote {args.events:,} events to {out} in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_rate(args: argparse.Namespace) -> int:
    from pipeline.batch import rate_files_parallel, total_records
    from pipeline.tariff_files import load_tariff_dir

    files = expand_inputs(args.files)
    lake = lake_from_arg(args, args.output, "--output").check_writable()
    ref = load_reference(args)
    tariffs = load_tariff_dir(Path(args.tariffs))
    total = total_records(files)
    with progress_bar("rate", total, "CDR") as advance:
        stats = rate_files_parallel(
            files,
            lake,
            ref,
            tariffs,
            workers=args.workers,
            batch_size=args.batch_size,
            progress=advance,
        )
    console.print(
        f"rated {stats.events:,} events in {stats.seconds:.1f} s ({stats.per_second:,.0f} CDR/s): "
        f"{stats.rated:,} rated, {stats.dead_letters:,} dead letters -> {lake.uri}"
    )
    if stats.skipped:
        console.print(
            f"{stats.skipped:,} events were already in the lake (an earlier run of the same "
            "files) and were not rated again"
        )
    if stats.by_reason:
        console.print(
            "dead letters by reason: "
            + ", ".join(f"{k}={v}" for k, v in sorted(stats.by_reason.items()))
        )
    if stats.unreadable:
        console.print(
            f"[red]unreadable input files[/red] ({len(stats.unreadable)}; the other files "
            "were rated, what these files hold is in the dead letters):"
        )
        for path, reason in stats.unreadable:
            console.print(f"  {escape(path)}: {escape(reason)}", soft_wrap=True)
        return EXIT_UNREADABLE_INPUT
    return 0


def cmd_close_cycle(args: argparse.Namespace) -> int:
    from pipeline.batch import run_close
    from pipeline.invoice_console import changes_table, invoice_table
    from pipeline.lake.tables import INVOICES, RATED, check_cycle
    from pipeline.rating.invoice_diff import total
    from pipeline.settings import load_settings
    from pipeline.tariff_files import load_tariff_dir

    cycle = check_cycle(args.cycle)  # the cheap refusals first; run_close() checks again
    redis = {"url": args.redis} if getattr(args, "redis", None) else {}
    settings = load_settings(Path(args.config) if args.config else None, redis=redis).close
    lake = lake_from_arg(args, args.lake, "--lake").require_existing()
    ref = load_reference(args)
    tariffs = load_tariff_dir(Path(args.tariffs))
    result = run_close(
        lake,
        ref,
        tariffs,
        cycle,
        allow_empty=args.allow_empty,
        as_of=args.as_of,
        settings=settings,
    )
    console.print(invoice_table(result.lines, cycle))
    source = f"{RATED} version {result.rated_calls_version}"
    if result.invoice_version is None:
        console.print(
            f"{result.lines.num_rows} invoice lines reproduced from {source} "
            f"({result.records:,} rated records); nothing written"
        )
        stored = result.previous.column("rated_calls_version").unique().to_pylist()
        recorded = ", ".join("not recorded" if v is None else str(v) for v in stored)
        against = (
            f"the stored close (invoice_lines version {result.previous_version}, "
            f"from {RATED} version {recorded or 'none'})"
        )
    else:
        console.print(
            f"{result.lines.num_rows} invoice lines from {source} ({result.records:,} rated "
            f"records) -> {lake.table_uri(INVOICES)} (billing_cycle={cycle}), version "
            f"{result.invoice_version}"
        )
        against = f"the previous close (invoice_lines version {result.previous_version})"
    if result.invoice_version is not None and result.previous.num_rows == 0:
        console.print(f"first close of {cycle}: no earlier invoice lines to compare with")
    elif not result.changes:
        console.print(f"no change against {against}")
    else:
        console.print(changes_table(result.changes, f"Changes of {cycle} against {against} (USD)"))
        console.print(
            f"{len(result.changes)} lines changed; total {total(result.previous):,.2f} -> "
            f"{total(result.lines):,.2f}"
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.analytics import analyst_mode, run_query

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    run_query(
        lake_from_arg(args, args.lake, "--lake"),
        sql,
        fmt=args.format,
        analyst=analyst_mode(args.analyst),
        out=sys.stdout,
        max_rows=args.max_rows,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.lake.tables import check_cycle
    from pipeline.report import write_report

    cycle = check_cycle(args.cycle)  # before it becomes part of the default file name
    output = Path(args.output or f"report-{cycle}.html")
    started = time.perf_counter()
    result = write_report(lake_from_arg(args, args.lake, "--lake"), cycle, output, top=args.top)
    console.print(
        f"wrote the report of cycle {cycle} to {result.path} "
        f"({result.bytes / 1024:,.0f} KiB, {time.perf_counter() - started:.1f} s)"
    )
    return 0
