"""The argument parser of ``cdr-pipeline``: every command, option and help text.

Contract: :func:`build_parser` returns a fresh parser; each command's ``set_defaults``
names its ``cmd_*`` function (``args.func``), and every command's ``--help`` ends with
the exit codes it can return (:data:`~pipeline.cli.common.COMMAND_EXIT_CODES`). Help
texts are written for users: no spec section numbers, every option explained. Parsing
has no side effects; a bad argument is argparse's usage error (exit 2).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from pipeline.cli.batch import cmd_close_cycle, cmd_generate, cmd_query, cmd_rate, cmd_report
from pipeline.cli.common import EXIT_CODES, exit_codes_text
from pipeline.cli.lake import cmd_lake_compact, cmd_lake_convert, cmd_lake_vacuum
from pipeline.cli.refdata import cmd_refdata_generate, cmd_refdata_load
from pipeline.cli.streaming import (
    cmd_dead_letters_export,
    cmd_dead_letters_replay,
    cmd_demo,
    cmd_produce,
    cmd_run,
)

DEFAULT_REFDATA_DIR = Path(__file__).resolve().parents[1] / "data" / "refdata"

DESCRIPTION = (
    "Rate telephone call detail records (CDRs): Avro files in batch or a Kafka topic as "
    "a streaming service, into a Parquet lake; close billing cycles into invoice "
    "lines; query and report on the lake."
)

#: ``--lake`` of the maintenance commands (an existing lake, else the ``output`` setting).
MAINTAINED_LAKE_HELP = "an existing lake: directory or s3://bucket/prefix (default: CDR_OUTPUT)"
#: ``--config`` of the commands that read only the lake settings from it.
S3_CONFIG_HELP = "settings file (YAML): the S3 settings of an s3:// lake"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cdr-pipeline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _wrap(text: str) -> str:
    """``text`` wrapped for ``--help`` (the raw formatter keeps the exit-code table)."""
    return textwrap.fill(text, 79)


def _table_version(value: str) -> int:
    """``--as-of``: a table version, a whole number >= 0 (argparse refuses, exit 2)."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a table version: expected a whole number >= 0 (the "
            "rated_calls_version an invoice line records)"
        )
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """A fresh parser of every command; :func:`_describe_commands` gives each command
    its exit codes (the top level lists all of them)."""
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
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default INFO; for run, the setting log_level, "
        "CDR_LOG_LEVEL, which this flag overrides)",
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
    )
    p.add_argument("--lake", help=MAINTAINED_LAKE_HELP)
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
    p.add_argument("--config", help=S3_CONFIG_HELP)
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
    )
    p.add_argument("--lake", help=MAINTAINED_LAKE_HELP)
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
    p.add_argument("--config", help=S3_CONFIG_HELP)
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
