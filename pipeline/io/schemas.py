"""Moved to :mod:`pipeline.avro.schemas`; this name is kept for existing imports."""

from pipeline.avro.schemas import (
    CALL_EVENT_SCHEMA_FILE,
    SCHEMAS_DIR,
    decode_datum,
    encode_datum,
    load_call_event_json,
    load_call_event_schema,
)

__all__ = [
    "CALL_EVENT_SCHEMA_FILE",
    "SCHEMAS_DIR",
    "decode_datum",
    "encode_datum",
    "load_call_event_json",
    "load_call_event_schema",
]
