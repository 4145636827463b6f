"""The Avro schemas shipped in ``schemas/`` and schemaless (datum) encoding.

The top-level ``schemas/`` of the repository is the source of truth. A built package
(wheel, or ``pip install .``) carries a copy as ``pipeline/schemas/`` (``setup.py``
maps it at build time); a source checkout (editable install, ``PYTHONPATH``) reads the
top-level directory itself. Parsed schemas are cached: callers must not mutate what
they get back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import fastavro


def _schemas_dir() -> Path:
    """``pipeline/schemas`` of an installed package, else the checkout's ``schemas/``."""
    packaged = Path(__file__).resolve().parents[1] / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "schemas"


SCHEMAS_DIR = _schemas_dir()
CALL_EVENT_SCHEMA_FILE = SCHEMAS_DIR / "call_event.avsc"


@cache
def load_call_event_json() -> dict[str, Any]:
    """The ``CallEvent`` schema as written in ``schemas/call_event.avsc`` (plain JSON)."""
    data: dict[str, Any] = json.loads(CALL_EVENT_SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


@cache
def load_call_event_schema() -> dict[str, Any]:
    """The ``CallEvent`` schema parsed by :func:`fastavro.parse_schema` (cached)."""
    parsed = fastavro.parse_schema(load_call_event_json())
    if not isinstance(parsed, dict):  # pragma: no cover - the shipped schema is a record
        raise TypeError("schemas/call_event.avsc is not a record schema")
    return parsed


def encode_datum(record: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> bytes:
    """Schemaless Avro binary encoding of one record (default: the ``CallEvent`` schema).

    ``start_time`` may be a timezone-aware ``datetime`` or an int of UTC microseconds.
    This is the dead-letter ``payload`` of an event in batch mode.
    """
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, dict(schema or load_call_event_schema()), dict(record))
    return buf.getvalue()


def decode_datum(
    payload: bytes,
    writer_schema: Mapping[str, Any] | None = None,
    reader_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode one schemaless datum (inverse of :func:`encode_datum`).

    Raises whatever fastavro raises on bad bytes; adapters translate that into a
    ``DECODE_ERROR`` dead letter.
    """
    writer = dict(writer_schema or load_call_event_schema())
    reader = dict(reader_schema) if reader_schema is not None else None
    record = fastavro.schemaless_reader(io.BytesIO(payload), writer, reader)
    if not isinstance(record, dict):
        raise TypeError(f"datum is not a record: {type(record).__name__}")
    return record
