"""The ``cdr-pipeline`` command line: one entry point, subcommands.

Exit codes (:data:`EXIT_CODE_MEANINGS`, listed in each command's ``--help``): 0 success, 2
usage or configuration refused (the message names the problem; nothing written), 3
infrastructure unavailable, 4 (``rate``) every readable input file rated but some
input files unreadable (listed at the end), 1 anything else, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from pipeline.errors import ConfigError, InfrastructureError, PipelineError
from pipeline.observability import console, setup_logging
from pipeline.rating.reference import ReferenceData
from pipeline.settings import RedisSettings, Settings

if TYPE_CHECKING:
    from pipeline.lake.lake import Lake

LOG = logging.getLogger(__name__)

DEFAULT_REFDATA_DIR = Path(__file__).resolve().parent / "data" / "refdata"

DESCRIPTION = (
    "Rate telephone call detail records (CDRs): Avro files in batch or a Kafka topic as "
    "a streaming service, into a Parquet lake; close billing cycles into invoice "
    "lines; query and report on the lake."
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_REFUSED = 2
EXIT_UNAVAILABLE = 3
#: ``rate``: some input files were unreadable (the readable ones were rated).
EXIT_UNREADABLE_INPUT = 4
EXIT_INTERRUPTED = 130

#: Every exit code and its meaning: the one table ``--help`` shows them from.
EXIT_CODE_MEANINGS: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "an unexpected failure (logged)",
    EXIT_REFUSED: "refused: bad arguments, settings, reference data, tariffs, cycle or "
    "path; the message names the problem and nothing is written",
    EXIT_UNAVAILABLE: "infrastructure unavailable (Kafka broker, Redis, schema registry, "
    "the lake's storage)",
    EXIT_UNREADABLE_INPUT: "every readable input file was rated, but some input files "
    "were unreadable (listed at the end with the reason; what they hold is in the "
    "dead letters)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
_EVERY = (EXIT_OK, EXIT_FAILURE, EXIT_REFUSED, EXIT_INTERRUPTED)
_WITH_INFRA = (*_EVERY, EXIT_UNAVAILABLE)
#: The codes each command can return; a command not listed: :data:`_WITH_INFRA`.
COMMAND_EXIT_CODES: dict[str, tuple[int, ...]] = {
    "generate": _EVERY,
    "refdata generate": _EVERY,
    "rate": (*_WITH_INFRA, EXIT_UNREADABLE_INPUT),
}


def exit_codes_text(command: str | None = None) -> str:
    """The ``exit codes:`` section of ``command``'s ``--help`` (all codes for the
    top-level help)."""
    every = EXIT_CODE_MEANINGS
    codes = sorted(every if command is None else COMMAND_EXIT_CODES.get(command, _WITH_INFRA))
    lines = ["exit codes:"]
    for code in codes:
        meaning = every[code]
        if command is None and code == EXIT_UNREADABLE_INPUT:
            meaning = f"rate only: {meaning}"
        wrapped = textwrap.wrap(meaning, 72)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)


#: The top-level ``--help`` epilog (each command's own is set by :func:`build_parser`).
EXIT_CODES = exit_codes_text()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cdr-pipeline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _wrap(text: str) -> str:
    """``text`` wrapped for ``--help`` (the raw formatter keeps the exit-code table)."""
    return textwrap.fill(text, 79)


def _expand(inputs: Sequence[str]) -> list[Path]:
    """Files, directories (their ``*.avro``) and globs -> sorted unique paths.

    :class:`ConfigError` for an input that names nothing to read: a missing path, a
    directory with no ``*.avro`` file, a glob that matches no file."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.avro") if p.is_file())
            if not found:
                raise ConfigError(f"{item}: directory has no .avro files")
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                raise ConfigError(f"{item}: matches no file")
        elif path.is_file():
            found = [path]
        elif path.exists():
            raise ConfigError(f"{item}: not a regular file or directory")
        else:
            raise ConfigError(f"{item}: no such file or directory")
        out.extend(found)
    if not out:
        raise ConfigError("no input files")
    return list(dict.fromkeys(out))


@contextlib.contextmanager
def _progress(label: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr with count, rate (``unit``/s) and ETA; yields ``advance(n)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else "")

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, speed_estimate_period=10) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _redis_settings(url: str | None) -> RedisSettings:
    """The Redis settings with ``url`` (a flag) over ``CDR_REDIS__URL``: password, TLS
    files and namespace come from ``CDR_REDIS__*`` or the secrets dir, as for ``run``."""
    from pipeline.settings import load_settings

    return load_settings(redis={"url": url} if url else {}).redis


def load_reference(args: argparse.Namespace) -> ReferenceData:
    """Reference data from ``--refdata DIR`` (in-process) or ``--redis URL``."""
    if getattr(args, "redis", None):
        from pipeline.refdata.redis_read import read_reference_from_redis

        store = _redis_settings(args.redis)
        return read_reference_from_redis(store.client(), namespace=store.namespace)
    from pipeline.refdata.files import load_reference_dir

    return load_reference_dir(Path(args.refdata))


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.generate import write_generated

    out = Path(args.output)
    if not out.parent.is_dir():
        raise ConfigError(f"--output {out}: directory {out.parent} does not exist")
    started = time.perf_counter()
    with _progress("generate", args.events, "ev") as advance:
        write_generated(
            out, args.events, seed=args.seed, refdata_dir=Path(args.refdata), progress=advance
        )
    console.print(f"wrote {args.events:,} events to {out} in {time.perf_counter() - started:.1f} s")
    return 0


def _lake(args: argparse.Namespace, value: str, what: str) -> Lake:
    """The lake ``value`` (a directory or ``s3://bucket/prefix``, checked); an S3 lake
    gets the lake section of the settings (``CDR_LAKE__*``, ``AWS_*``, ``--config``)."""
    from pipeline.lake.lake import Lake
    from pipeline.lake.location import parse_location
    from pipeline.settings import load_settings

    location = parse_location(value, what)
    if location.is_local:
        return Lake(location)
    config = getattr(args, "config", None)
    return Lake(location, load_settings(Path(config) if config else None).lake)


def cmd_rate(args: argparse.Namespace) -> int:
    from pipeline.batch import rate_files_parallel, total_records
    from pipeline.tariff_files import load_tariff_dir

    files = _expand(args.files)
    lake = _lake(args, args.output, "--output").check_writable()
    ref = load_reference(args)
    tariffs = load_tariff_dir(Path(args.tariffs))
    total = total_records(files)
    with _progress("rate", total, "CDR") as advance:
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


def _table_version(value: str) -> int:
    """``--as-of``: a table version, a whole number >= 0 (argparse refuses, exit 2)."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a table version: expected a whole number >= 0 (the "
            "rated_calls_version an invoice line records)"
        )
    return int(text)


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
    lake = _lake(args, args.lake, "--lake").require_existing()
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


def cmd_refdata_load(args: argparse.Namespace) -> int:
    from pipeline.refdata.redis_load import load_to_redis

    store = _redis_settings(args.redis)
    version = load_to_redis(store.client(), Path(args.directory), namespace=store.namespace)
    console.print(f"reference data version {version} is now current")
    return 0


def cmd_refdata_generate(args: argparse.Namespace) -> int:
    from pipeline.refdata.generate import generate_reference_dir

    started = time.perf_counter()
    generate_reference_dir(
        Path(args.output), npanxx_rows=args.npanxx, lnp_rows=args.lnp, seed=args.seed
    )
    console.print(f"wrote reference data to {args.output} in {time.perf_counter() - started:.1f} s")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from flags (only those given), environment and ``--config``."""
    from pipeline.settings import load_settings

    kafka = {"brokers": getattr(args, "brokers", None)}
    redis = {"url": getattr(args, "redis", None)}
    return load_settings(
        Path(args.config) if getattr(args, "config", None) else None,
        topic=getattr(args, "topic", None),
        group=getattr(args, "group", None),
        tariffs=getattr(args, "tariffs", None),
        output=getattr(args, "output", None),
        dead_letter_topic=getattr(args, "dead_letter_topic", None),
        stop_when_idle=getattr(args, "stop_when_idle", None),
        schema_registry=getattr(args, "schema_registry", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        kafka={k: v for k, v in kafka.items() if v is not None},
        redis={k: v for k, v in redis.items() if v is not None},
    )


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.batch import total_records
    from pipeline.streaming import produce_files

    settings = _settings(args)
    files = _expand(args.files)
    with _progress("produce", total_records(files), "ev") as advance:
        stats = produce_files(
            files,
            settings.kafka,
            settings.topic,
            schema_registry=settings.schema_registry,
            progress=advance,
            partitions=args.partitions,
        )
    console.print(f"produced {stats.events:,} events to {settings.topic} in {stats.seconds:.1f} s")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.streaming import run

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    stats = run(settings)
    p50, p99 = stats.latency_percentiles()
    console.print(
        f"consumed {stats.consumed:,}: rated {stats.rated:,}, dead letters {stats.dead_letters:,}, "
        f"{stats.files} files; event-to-lake latency p50 {p50 / 1000:.2f} s, p99 {p99 / 1000:.2f} s"
    )
    return 0


def cmd_dead_letters_export(args: argparse.Namespace) -> int:
    from pipeline.lake.lake import Lake
    from pipeline.lake.tables import DEAD
    from pipeline.streaming import export_dead_letters

    settings = _settings(args)
    lake = Lake(settings.output, settings.lake)
    n = export_dead_letters(settings.kafka, args.topic, lake)
    console.print(f"exported {n:,} new dead letters from {args.topic} to {lake.table_uri(DEAD)}")
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    from pipeline.lake.lake import Lake
    from pipeline.streaming import read_dead_letter_topic, replay_dead_letters

    settings = _settings(args)
    if args.from_topic:
        # letters too big for the topic get their whole payload from the run's lake
        dead = read_dead_letter_topic(
            settings.kafka, args.from_topic, payloads=Lake(settings.output, settings.lake)
        )
    elif args.lake:
        dead = _lake(args, args.lake, "--lake").read_dead_letters()
    else:
        raise ConfigError("replay needs --from-topic DLQ or --lake LAKE")
    n = replay_dead_letters(dead, settings.kafka, args.topic, reasons=args.reason)
    console.print(f"replayed {n:,} dead letters to {args.topic}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.analytics import analyst_mode, run_query

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    run_query(
        _lake(args, args.lake, "--lake"),
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
    result = write_report(_lake(args, args.lake, "--lake"), cycle, output, top=args.top)
    console.print(
        f"wrote the report of cycle {cycle} to {result.path} "
        f"({result.bytes / 1024:,.0f} KiB, {time.perf_counter() - started:.1f} s)"
    )
    return 0


def cmd_lake_convert(args: argparse.Namespace) -> int:
    from pipeline.lake.convert import convert_lake

    converted = convert_lake(_lake(args, args.lake, "LAKE"))
    for name, files in converted.items():
        console.print(f"converted {name}: a Delta table of {files:,} data files")
    return 0


def _maintained_lake(args: argparse.Namespace) -> Lake:
    """``--lake``, else the ``output`` setting (``CDR_OUTPUT``, ``--config``): an
    existing lake (never created here)."""
    from pipeline.lake.lake import Lake
    from pipeline.settings import load_settings

    if args.lake is not None:
        return _lake(args, args.lake, "--lake").require_existing()
    config = getattr(args, "config", None)
    settings = load_settings(Path(config) if config else None)
    return Lake(settings.output, settings.lake).require_existing()


def cmd_lake_compact(args: argparse.Namespace) -> int:
    from pipeline.lake.maintenance import COMPACTABLE, compact_lake, table_cycles
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
    from pipeline.lake.maintenance import check_retention, vacuum_lake
    from pipeline.lake.sizes import parse_hours

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


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(Path(args.workdir), events=args.events, batch=args.batch)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.tariff_files import DEFAULT_TARIFFS_DIR

    parser = argparse.ArgumentParser(
        prog="cdr-pipeline",
        description=_wrap(DESCRIPTION),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="DEBUG, INFO, WARNING or ERROR (default INFO); run takes its level from the "
        "setting log_level (CDR_LOG_LEVEL) instead",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def refdata_opts(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group()
        src.add_argument(
            "--refdata",
            default=str(DEFAULT_REFDATA_DIR),
            help="reference data directory (default: the shipped sample)",
        )
        src.add_argument(
            "--redis",
            help="read reference data from Redis instead (redis:// or rediss://); "
            "password and TLS files from CDR_REDIS__*",
        )
        p.add_argument(
            "--tariffs",
            default=str(DEFAULT_TARIFFS_DIR),
            help="tariffs directory (default: the shipped tariffs)",
        )

    p = sub.add_parser("generate", help="write synthetic switch traffic to an Avro file")
    p.add_argument("--events", type=int, required=True, help="how many call events")
    p.add_argument("--output", required=True, help="Avro file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--refdata",
        default=str(DEFAULT_REFDATA_DIR),
        help="reference data the numbers are drawn from (default: the shipped sample)",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "rate",
        help="batch-rate Avro files into the lake",
        description=_wrap(
            "Rate Avro container files of CallEvent into the lake. Every record "
            "ends as a rated record or a dead letter. A file none of whose records can be rated "
            "(cannot be opened, not an Avro container, truncated header, a writer schema that "
            "does not fit CallEvent, no decodable record) is unreadable: the other files are "
            "still rated, unreadable files are listed at the end and the exit code is 4. "
            "Re-running the same command replaces each file's output (no duplicates), also "
            "after a run that failed part-way."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    refdata_opts(p)
    p.add_argument("--output", required=True, help="lake directory")
    p.add_argument(
        "--batch-size", type=int, default=250_000, help="records rated at a time (default 250000)"
    )
    p.add_argument("--workers", type=int, default=1, help="rate files in N parallel processes")
    p.add_argument("files", nargs="+", help="Avro container files, directories or globs")
    p.set_defaults(func=cmd_rate)

    p = sub.add_parser(
        "close-cycle",
        help="close a billing cycle: write its invoice lines",
        description=_wrap(
            "Close a billing cycle: sum its rated calls into invoice lines per account "
            "(usage per call class, short-call surcharges, carrier mix, minute caps) and "
            "replace the cycle's invoice lines (a new version of the invoice_lines table; "
            "each line records the rated_calls version it was computed from). Prints what changed against the previous close, line by "
            "line. Runs in bounded memory (close.memory_limit, spilling to "
            "close.temp_directory). Refused (exit 2, nothing written): a lake that does not "
            "exist or has no rated_calls, a cycle that is not YYYY-MM, an --as-of that is not "
            "a readable version, an unreadable lake file, a cycle with no rated calls "
            "(unless --allow-empty)."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    refdata_opts(p)
    p.add_argument("--lake", required=True, help="an existing lake (never created here)")
    p.add_argument("--cycle", required=True, help="YYYY-MM (ASCII digits, month 01-12)")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty invoice for a cycle with no rated calls (default: refuse)",
    )
    p.add_argument(
        "--as-of",
        type=_table_version,
        metavar="VERSION",
        help="reproduce a past close: read rated_calls at this table version (the "
        "rated_calls_version its invoice lines record), print the lines and how they differ "
        "from the stored close; nothing is written",
    )
    p.add_argument(
        "--config",
        help="settings file (YAML): close.memory_limit, close.temp_directory, lake.*",
    )
    p.set_defaults(func=cmd_close_cycle)

    refdata = sub.add_parser("refdata", help="reference data").add_subparsers(
        dest="refdata_command", required=True
    )
    p = refdata.add_parser("load", help="validate DIR and load it into Redis atomically")
    p.add_argument("directory", help="reference data directory (npanxx.csv, lnp.csv, ...)")
    p.add_argument(
        "--redis",
        help="Redis URL (redis:// or rediss://; default CDR_REDIS__URL); keep the password "
        "in CDR_REDIS__PASSWORD or the secrets dir, not on the command line",
    )
    p.set_defaults(func=cmd_refdata_load)
    p = refdata.add_parser("generate", help="write reference data of real size (benchmarks)")
    p.add_argument("--output", required=True, help="directory to write")
    p.add_argument("--npanxx", type=int, default=100_000, help="NPA-NXX rows (default 100000)")
    p.add_argument("--lnp", type=int, default=1_000_000, help="ported numbers (default 1000000)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.set_defaults(func=cmd_refdata_generate)

    def kafka_opts(p: argparse.ArgumentParser, topic_help: str = "input topic") -> None:
        p.add_argument("--brokers", help="HOST:PORT[,HOST:PORT] (setting kafka.brokers)")
        p.add_argument("--topic", help=topic_help)
        p.add_argument("--schema-registry", help="Confluent-compatible Schema Registry URL")
        p.add_argument(
            "--config", help="settings file (YAML); flags win over it and over CDR_* env vars"
        )

    p = sub.add_parser("produce", help="publish Avro files to Kafka in the Confluent wire format")
    kafka_opts(p)
    p.add_argument("--partitions", type=int, default=4, help="partitions if the topic is created")
    p.add_argument("files", nargs="+", help="Avro container files, directories or globs")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("run", help="the streaming service (a consumer-group member)")
    kafka_opts(p)
    p.add_argument("--group", help="consumer group id")
    p.add_argument("--redis", help="Redis URL (redis:// or rediss://); a password here is a secret")
    p.add_argument("--tariffs", help="tariffs directory")
    p.add_argument("--output", help="lake directory")
    p.add_argument("--dead-letter-topic", help="where dead letters go (default call-events-dlq)")
    p.add_argument(
        "--stop-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop after this long with nothing to consume (time paused on an outage "
        "does not count); default: run until SIGTERM or SIGINT",
    )
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument(
        "--metrics-host",
        metavar="ADDRESS",
        help="address to serve them on (default 0.0.0.0: all interfaces; 127.0.0.1: this "
        "machine only)",
    )
    p.set_defaults(func=cmd_run)

    lake_cmds = sub.add_parser("lake", help="lake maintenance").add_subparsers(
        dest="lake_command", required=True
    )
    p = lake_cmds.add_parser(
        "convert",
        help="turn a lake of the old plain-Parquet layout into Delta tables, in place",
        description=(
            "Adds a Delta log to each table folder of a lake written by an earlier version "
            "(no data file is rewritten); streaming checkpoints become the tables' "
            "application transactions. Local lakes only."
        ),
    )
    p.add_argument("lake", help="the lake directory")
    p.set_defaults(func=cmd_lake_convert)

    p = lake_cmds.add_parser(
        "compact",
        help="rewrite the lake's small files into files of about --target-size",
        description=_wrap(
            "Rewrite the small files of rated_calls (per billing cycle) and dead_letters "
            "into files of about --target-size, one commit per cycle. Safe while streaming "
            "members and rate keep committing: readers see every row exactly once before, "
            "during and after it, and the members' offsets are untouched. A compaction that "
            "loses a race to another commit is retried. The replaced files stay on disk "
            "until lake vacuum. Refused (exit 2, nothing written): a lake that does not "
            "exist, a cycle that is not YYYY-MM or has no rated calls, a bad size."
        )
        + "\n\n"
        + _wrap(
            "Exit 3 also when the compaction lost its race five times in a row (nothing "
            "of it committed: run it again)."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--lake", help="an existing lake: directory or s3://bucket/prefix (default: CDR_OUTPUT)"
    )
    p.add_argument("--cycle", help="only this billing cycle of rated_calls (YYYY-MM)")
    p.add_argument(
        "--table",
        choices=("rated_calls", "dead_letters", "all"),
        default="all",
        help="which table (default: all)",
    )
    p.add_argument(
        "--target-size",
        default="128MiB",
        help="size of the files written, e.g. 128MiB, 1GiB, 512MB (1 MiB to 16 GiB; "
        "default 128MiB)",
    )
    p.add_argument("--config", help="settings file (YAML): the S3 settings of an s3:// lake")
    p.set_defaults(func=cmd_lake_compact)

    p = lake_cmds.add_parser(
        "vacuum",
        help="delete data files no version newer than --retain-hours uses",
        description=_wrap(
            "Delete the data files of rated_calls, dead_letters and invoice_lines that the "
            "tables no longer list (compacted away, invoice lines of a re-closed cycle) and "
            "that were replaced more than --retain-hours ago; then checkpoint each table's "
            "log. This ends time travel past the horizon: a version older than "
            "--retain-hours (close-cycle --as-of, a reader's pinned version) can no longer "
            "be read. Below 168 hours (7 days) refused unless --force. Refused (exit 2, "
            "nothing deleted): a lake that does not exist, hours that are not a whole "
            "number of ASCII digits, less than 168 hours without --force, --full with less "
            "than 1 hour."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--lake", help="an existing lake: directory or s3://bucket/prefix (default: CDR_OUTPUT)"
    )
    p.add_argument(
        "--retain-hours",
        required=True,
        help="keep files replaced less than this many hours ago (168 or more without --force)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    p.add_argument(
        "--force",
        action="store_true",
        help="accept --retain-hours below 168 (readers of older versions may fail)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="also delete files no commit ever listed (left by writers stopped before "
        "their commit); lists every file of each table",
    )
    p.add_argument("--config", help="settings file (YAML): the S3 settings of an s3:// lake")
    p.set_defaults(func=cmd_lake_vacuum)

    dl = sub.add_parser("dead-letters", help="dead-letter topic: export, replay").add_subparsers(
        dest="dl_command", required=True
    )
    p = dl.add_parser("export", help="copy a dead-letter topic into LAKE/dead_letters/")
    kafka_opts(p, "dead-letter topic")
    p.add_argument("--output", required=True, help="lake directory")
    p.set_defaults(func=cmd_dead_letters_export)
    p = dl.add_parser(
        "replay", help="send dead letters back through rating once the cause is fixed"
    )
    kafka_opts(p, "input topic to send them to")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-topic", help="read the dead letters from this dead-letter topic")
    src.add_argument("--lake", help="read the dead letters from LAKE/dead_letters/")
    p.add_argument("--reason", action="append", help="only these reason codes (repeatable)")
    p.set_defaults(func=cmd_dead_letters_replay)

    p = sub.add_parser("query", help="run SQL over the lake with DuckDB (docs/analytics.md)")
    p.add_argument(
        "sql",
        help="DuckDB SQL ('-' reads stdin); views rated_calls (latest revision of each call), "
        "rated_calls_all_revisions, dead_letters, invoice_lines",
    )
    p.add_argument("--lake", required=True, help="lake directory")
    p.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="default table"
    )
    p.add_argument(
        "--analyst",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CPNI-safe: mask phone numbers, no payloads, no file access "
        "(default: setting CDR_ANALYST_MODE, else off)",
    )
    p.add_argument("--max-rows", type=int, default=100, help="table format: rows shown")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser(
        "report",
        help="one cycle as a self-contained HTML page with charts",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--lake", required=True, help="lake directory")
    p.add_argument("--cycle", required=True, help="YYYY-MM")
    p.add_argument(
        "--output", help="HTML file to write, outside the lake (default: report-YYYY-MM.html)"
    )
    p.add_argument("--top", type=int, default=15, help="accounts in the top-accounts chart")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the whole path on this machine, nothing to install")
    p.add_argument("--workdir", default="demo-lake", help="where it writes (default demo-lake)")
    p.add_argument(
        "--events", type=int, default=200_000, help="call events to generate (default 200000)"
    )
    p.add_argument("--batch", action="store_true", help="batch path only (no broker, no Redis)")
    p.set_defaults(func=cmd_demo)
    _describe_commands(parser)
    return parser


def _describe_commands(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Every command's ``--help`` ends with the exit codes it can return
    (:data:`COMMAND_EXIT_CODES`); a command without a description gets its one-line
    help as one."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, command in action.choices.items():
            path = f"{prefix}{name}"
            summary = helps.get(name)
            if command.description is None and summary:
                command.description = f"{summary[0].upper()}{summary[1:]}."
            command.epilog = exit_codes_text(path)
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            _describe_commands(command, f"{path} ")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Every error message it prints goes through
    :func:`pipeline.cpni.redact` (no phone number reaches the console)."""
    from pipeline.cpni import redact

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        console.print(f"[red]refused:[/red] {escape(redact(str(exc)))}")
        return EXIT_REFUSED
    except InfrastructureError as exc:
        console.print(f"[red]unavailable:[/red] {escape(redact(str(exc)))}")
        return EXIT_UNAVAILABLE
    except PipelineError as exc:
        LOG.error("failed: %s", redact(str(exc)))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        console.print("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
