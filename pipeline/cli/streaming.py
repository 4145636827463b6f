"""The streaming commands: ``produce``, ``run``, ``dead-letters export`` and
``dead-letters replay``, and ``demo`` (the whole path on one machine).

Contract: each ``cmd_*`` takes the parsed arguments of its command and reads its
settings through :func:`~pipeline.cli.common.settings_from_args` (flags given win over
``CDR_*`` and ``--config``), prints a summary and returns an exit code. Outages surface
as :class:`~pipeline.errors.InfrastructureError` (exit 3 in :func:`pipeline.cli.main`);
the service itself is :mod:`pipeline.streaming`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import (
    expand_inputs,
    lake_from_arg,
    progress_bar,
    settings_from_args,
)
from pipeline.errors import ConfigError
from pipeline.observability import console, setup_logging


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.batch import total_records
    from pipeline.streaming import produce_files

    settings = settings_from_args(args)
    files = expand_inputs(args.files)
    with progress_bar("produce", total_records(files), "ev") as advance:
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

    settings = settings_from_args(args)
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

    settings = settings_from_args(args)
    lake = Lake(settings.output, settings.lake)
    n = export_dead_letters(settings.kafka, args.topic, lake)
    console.print(f"exported {n:,} new dead letters from {args.topic} to {lake.table_uri(DEAD)}")
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    from pipeline.lake.lake import Lake
    from pipeline.streaming import read_dead_letter_topic, replay_dead_letters

    settings = settings_from_args(args)
    if args.from_topic:
        # letters too big for the topic get their whole payload from the run's lake
        dead = read_dead_letter_topic(
            settings.kafka, args.from_topic, payloads=Lake(settings.output, settings.lake)
        )
    elif args.lake:
        dead = lake_from_arg(args, args.lake, "--lake").read_dead_letters()
    else:
        raise ConfigError("replay needs --from-topic DLQ or --lake LAKE")
    n = replay_dead_letters(dead, settings.kafka, args.topic, reasons=args.reason)
    console.print(f"replayed {n:,} dead letters to {args.topic}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(Path(args.workdir), events=args.events, batch=args.batch)
