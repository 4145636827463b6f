"""Arrow schemas: the contract between adapters, the rating core and the lake.

* :data:`EVENT_SCHEMA`       -- decoded call events as adapters hand them to the core.
* :data:`RATED_SCHEMA`       -- rated records (spec section 3), Parquet ``rated_calls``.
* :data:`DEAD_LETTER_SCHEMA` -- dead letters (spec R1), Parquet ``dead_letters`` and Kafka.
* :data:`INVOICE_LINE_SCHEMA`-- invoice lines (spec section 4), Parquet ``invoice_lines``.

Times are UTC microseconds. Money is ``decimal128(18, 6)`` per call and
``decimal128(18, 2)`` per invoice line; never float.
"""

from __future__ import annotations

import pyarrow as pa

MONEY = pa.decimal128(18, 6)
CENTS = pa.decimal128(18, 2)
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Where an event came from. Kafka fields are null in batch mode; file fields are
#: null in streaming mode. ``source_index`` is the 0-based record index in the file.
SOURCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("source_topic", pa.string()),
    pa.field("source_partition", pa.int32()),
    pa.field("source_offset", pa.int64()),
    pa.field("source_file", pa.string()),
    pa.field("source_index", pa.int64()),
)

#: The fields of ``schemas/call_event.avsc`` (enums as strings), nullable because a
#: decoder may hand over a record with a required field missing (R1 MISSING_FIELD).
CALL_EVENT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("call_id", pa.string()),
    pa.field("revision", pa.int32()),
    pa.field("account_id", pa.string()),
    pa.field("trunk_id", pa.string()),
    pa.field("direction", pa.string()),
    pa.field("leg", pa.string()),
    pa.field("calling_number", pa.string()),
    pa.field("called_number", pa.string()),
    pa.field("original_calling_number", pa.string()),
    pa.field("start_time", TIMESTAMP),
    pa.field("duration_ms", pa.int64()),
    pa.field("disposition", pa.string()),
    pa.field("ani_ii", pa.string()),
    pa.field("sip_response_code", pa.int32()),
    pa.field("switch_id", pa.string()),
)

#: Input of the rating core. ``payload`` holds the raw bytes of the event (the Kafka
#: message value, or the Avro datum in batch mode) and is only copied to dead letters.
EVENT_SCHEMA = pa.schema([*CALL_EVENT_FIELDS, *SOURCE_FIELDS, pa.field("payload", pa.binary())])

RATED_SCHEMA = pa.schema(
    [
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("revision", pa.int32(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("trunk_id", pa.string(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("leg", pa.string(), nullable=False),
        pa.field("calling_number", pa.string()),
        pa.field("called_number", pa.string(), nullable=False),
        pa.field("original_calling_number", pa.string()),
        pa.field("start_time", TIMESTAMP, nullable=False),
        pa.field("billing_cycle", pa.string(), nullable=False),
        pa.field("disposition", pa.string(), nullable=False),
        pa.field("duration_ms", pa.int64(), nullable=False),
        pa.field("ani_ii", pa.string()),
        pa.field("sip_response_code", pa.int32()),
        pa.field("switch_id", pa.string()),
        pa.field("call_class", pa.string(), nullable=False),
        pa.field("origin_region", pa.string(), nullable=False),
        pa.field("origin_state", pa.string()),
        pa.field("origin_ocn", pa.string()),
        pa.field("origin_carrier_category", pa.string(), nullable=False),
        pa.field("destination_region", pa.string(), nullable=False),
        pa.field("destination_state", pa.string()),
        pa.field("jurisdiction", pa.string()),
        pa.field("increment_class", pa.string(), nullable=False),
        pa.field("billable_seconds", pa.int64(), nullable=False),
        pa.field("rate_per_min", MONEY, nullable=False),
        pa.field("usage_charge", MONEY, nullable=False),
        pa.field("surcharge", MONEY, nullable=False),
        pa.field("total_charge", MONEY, nullable=False),
        pa.field("tariff_id", pa.string(), nullable=False),
        pa.field("tariff_version", pa.string(), nullable=False),
        pa.field("flags", pa.list_(pa.string()), nullable=False),
        *SOURCE_FIELDS,
    ]
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("call_id", pa.string()),
        pa.field("revision", pa.int32()),
        *SOURCE_FIELDS,
        pa.field("payload", pa.binary()),
    ]
)

INVOICE_LINE_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("billing_cycle", pa.string(), nullable=False),
        pa.field("line_type", pa.string(), nullable=False),
        pa.field("trunk_id", pa.string()),
        pa.field("quantity", pa.decimal128(18, 6), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("unit_price", pa.decimal128(18, 6)),
        pa.field("amount", CENTS, nullable=False),
        pa.field("tariff_id", pa.string(), nullable=False),
        pa.field("tariff_version", pa.string(), nullable=False),
        #: The ``rated_calls`` table version the line was computed from (audit; null on
        #: lines closed before versions were recorded).
        pa.field("rated_calls_version", pa.int64()),
    ]
)


def empty_events() -> pa.Table:
    """An empty table of :data:`EVENT_SCHEMA`."""
    return EVENT_SCHEMA.empty_table()
