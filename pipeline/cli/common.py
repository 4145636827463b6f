"""What every command of the command line shares: the exit-code table, reading the
inputs and settings a command names, the progress bar.

Contract: :data:`EXIT_CODE_MEANINGS` is the one table of exit codes (``--help`` shows
them from it through :func:`exit_codes_text`, :func:`pipeline.cli.main` returns these
constants); :data:`COMMAND_EXIT_CODES` lists the commands that cannot return all of
them. The helpers refuse a bad input, path or setting with :class:`ConfigError` (exit 2)
before anything is written; they print nothing themselves except the progress bar
(on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.observability import console
from pipeline.rating.reference import ReferenceData
from pipeline.settings import RedisSettings, Settings

if TYPE_CHECKING:
    from pipeline.lake.lake import Lake

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


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
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
def progress_bar(label: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
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


def redis_settings(url: str | None) -> RedisSettings:
    """The Redis settings with ``url`` (a flag) over ``CDR_REDIS__URL``: password, TLS
    files and namespace come from ``CDR_REDIS__*`` or the secrets dir, as for ``run``."""
    from pipeline.settings import load_settings

    return load_settings(redis={"url": url} if url else {}).redis


def load_reference(args: argparse.Namespace) -> ReferenceData:
    """Reference data from ``--refdata DIR`` (in-process) or ``--redis URL``."""
    if getattr(args, "redis", None):
        from pipeline.refdata.redis_read import read_reference_from_redis

        store = redis_settings(args.redis)
        return read_reference_from_redis(store.client(), namespace=store.namespace)
    from pipeline.refdata.files import load_reference_dir

    return load_reference_dir(Path(args.refdata))


def lake_from_arg(args: argparse.Namespace, value: str, what: str) -> Lake:
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


def settings_from_args(args: argparse.Namespace) -> Settings:
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
        log_level=getattr(args, "log_level", None),
        kafka={k: v for k, v in kafka.items() if v is not None},
        redis={k: v for k, v in redis.items() if v is not None},
    )
