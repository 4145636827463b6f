"""Logging set-up. Log decisions, not records: one line per batch or file with its
source range and counts; never a phone number or a secret.

Two renderings of the same lines (:func:`setup_logging`):

* ``kv`` (default): ``2024-05-01 12:00:00,123 INFO pipeline.runtime.committer flushed
  topic=call-events partition=3 offsets=100-199 rated=98 dead_letters=2 files=1``;
* ``json``: one JSON object per line with ``ts`` (UTC, ISO 8601), ``level``,
  ``logger``, ``msg`` and every ``key=value`` token of the message as a field
  (integers and decimals typed; ``offsets=a-b`` also as ``offset_first`` /
  ``offset_last``).

Defence in depth: :class:`RedactPhoneNumbers` replaces anything that looks like a
phone number in every record's final message and traceback with ``<number>``
(:func:`pipeline.cpni.redact`: 7 or more digits of any script, separators such as
spaces, dots, dashes and parentheses allowed), except ISO-8601 dates and times and
the numbers the pipeline logs itself (``offsets=``, ``rated=``, ..., IPv4 addresses,
reference data versions).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from rich.console import Console

from pipeline.cpni import REDACTED as REDACTED  # re-exported
from pipeline.cpni import redact
from pipeline.errors import ConfigError

#: Every module logs to ``logging.getLogger(__name__)``: all sit under this root.
ROOT_LOGGER = "pipeline"
LOG = logging.getLogger(__name__)
#: Progress bars, tables and summaries go to stderr so stdout stays parseable.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

LogFormat = Literal["kv", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("kv", "json")
KV_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_KV_TOKEN = re.compile(r"(?<!\S)([A-Za-z_][A-Za-z0-9_.]*)=(\S+)")
_INT = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


class RedactPhoneNumbers(logging.Filter):
    """Rewrites each record's message (arguments merged in), traceback and stack with
    :func:`redact`. Never drops a record.

    Attached to the handlers :func:`setup_logging` installs (a filter on a logger sees
    only records logged on that very logger, not on its children) and to the
    ``pipeline`` logger itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: let the handler report it
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        for key, value in _KV_TOKEN.findall(message):
            if key not in doc:
                doc[key] = _typed(value)
            if key == "offsets" and (span := _RANGE.fullmatch(value)):
                doc.setdefault("offset_first", int(span.group(1)))
                doc.setdefault("offset_last", int(span.group(2)))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


def _typed(value: str) -> int | float | str:
    if _INT.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        return float(value)
    return value


def setup_logging(level: str = "INFO", fmt: str = "kv", *, stream: TextIO | None = None) -> None:
    """Log the ``pipeline`` loggers to ``stream`` (default stderr) as ``kv`` lines
    or ``json`` lines, one per decision, with phone numbers redacted. Replaces any
    handler a previous call installed. Raises :class:`ConfigError` for another ``fmt``.
    """
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(KV_FORMAT))
    handler.addFilter(RedactPhoneNumbers())
    root = logging.getLogger(ROOT_LOGGER)
    root.handlers[:] = [handler]
    root.filters[:] = [f for f in root.filters if not isinstance(f, RedactPhoneNumbers)]
    root.addFilter(RedactPhoneNumbers())
    root.setLevel(level.upper())
    root.propagate = False
