"""Logging set-up. Log decisions, not records: one line per batch or file with its
source range and counts; never a phone number or a secret."""

from __future__ import annotations

import logging
import sys

from rich.console import Console

LOG = logging.getLogger("cdr_pipeline")
#: Progress bars, tables and summaries go to stderr so stdout stays parseable.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def setup_logging(level: str = "INFO") -> None:
    """Plain ``key=value`` lines on stderr, one per decision."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("cdr_pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
