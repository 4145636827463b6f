"""The ``cdr-pipeline`` command line: one entry point, subcommands.

Exit codes (:data:`EXIT_CODE_MEANINGS`, listed in each command's ``--help``): 0 success, 2
usage or configuration refused (the message names the problem; nothing written), 3
infrastructure unavailable, 4 (``rate``) every readable input file rated but some
input files unreadable (listed at the end), 1 anything else, 130 interrupted.

Layout: :mod:`~pipeline.cli.parser` (every command and its help),
:mod:`~pipeline.cli.common` (exit codes, inputs, settings, progress bar) and one module
per family of commands: :mod:`~pipeline.cli.batch`, :mod:`~pipeline.cli.streaming`,
:mod:`~pipeline.cli.lake`, :mod:`~pipeline.cli.refdata`. :func:`main` (the console
script ``pipeline.cli:main``; also ``python -m pipeline.cli``) maps the exception tree
onto the exit codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rich.markup import escape

from pipeline.cli.common import (
    COMMAND_EXIT_CODES,
    EXIT_CODE_MEANINGS,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_UNREADABLE_INPUT,
    exit_codes_text,
    load_reference,
    settings_from_args,
)
from pipeline.cli.parser import build_parser
from pipeline.errors import ConfigError, InfrastructureError, PipelineError
from pipeline.observability import console, setup_logging

__all__ = [
    "COMMAND_EXIT_CODES",
    "EXIT_CODE_MEANINGS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_UNREADABLE_INPUT",
    "build_parser",
    "exit_codes_text",
    "load_reference",
    "main",
    "settings_from_args",
]

LOG = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Every error message it prints goes through
    :func:`pipeline.cpni.redact` (no phone number reaches the console)."""
    from pipeline.cpni import redact

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or "INFO")
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
