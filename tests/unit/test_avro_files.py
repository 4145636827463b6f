"""Avro container files of CallEvent <-> EVENT_SCHEMA tables (spec section 1, R1).

Covers the roundtrip (vectorized and fastavro writers, polars and fastavro readers),
Avro schema resolution against older/newer writer schemas, damaged files (every
record ends as an event or inside a DECODE_ERROR dead letter) and batching.
"""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from pipeline.avro.container import parse_header
from pipeline.avro.schemas import (
    decode_datum,
    encode_datum,
    load_call_event_json,
    load_call_event_schema,
)
from pipeline.errors import DataError
from pipeline.io import file_reader
from pipeline.io.avro_files import (
    EventBatch,
    EventFileWriter,
    count_records,
    encode_table,
    events_to_records,
    iter_event_batches,
    schema_of,
    write_events,
)
from pipeline.rating.codes import Reason
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pipeline.rating.rate import rate_batch
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

T0 = datetime(2026, 11, 1, tzinfo=UTC)
REF = load_reference_dir(SAMPLE_REFDATA_DIR)
TARIFFS = load_tariff_dir(DEFAULT_TARIFFS_DIR)
CALL_FIELDS = [f["name"] for f in load_call_event_json()["fields"]]


def make_records(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Varied, valid CallEvent records (plus a few values a rating core rejects)."""
    dispositions = ["ANSWERED", "BUSY", "NO_ANSWER", "FAILED", "CANCELLED"]
    out = []
    for i in range(start, start + n):
        forwarded = i % 11 == 5
        out.append(
            {
                "call_id": f"SW-T-{i:012d}",
                "revision": i % 3 if i % 17 == 0 else 0,
                "account_id": f"ACC-{1001 + i % 4}",
                "trunk_id": f"TRK-ACC-{1001 + i % 4}-{1 + i % 2}",
                "direction": "OUTBOUND" if forwarded or i % 5 == 0 else "INBOUND",
                "leg": "FORWARDED" if forwarded else "ORIGINAL",
                "calling_number": None if i % 13 == 0 else f"+1907555{i % 10_000:04d}",
                "called_number": "+18005551234" if i % 7 else "12125550100",
                "original_calling_number": "+525555550100" if forwarded else None,
                "start_time": T0 + timedelta(seconds=i, microseconds=i % 997),
                "duration_ms": [-5, 0, 1, 61_200, 2**40][i % 5] if i % 9 == 0 else 1000 * i,
                "disposition": dispositions[i % 5],
                "ani_ii": ["27", "70", "29", "00", None][i % 5],
                "sip_response_code": [200, 486, 480, 503, 487][i % 5],
                "switch_id": "SW-Tö" if i % 19 == 0 else "SW-T",  # a multi-byte character
            }
        )
    return out


def table_of(records: list[dict[str, Any]]) -> pa.Table:
    cols = {f.name: pa.array([r.get(f.name) for r in records], f.type) for f in EVENT_SCHEMA}
    return pa.Table.from_pydict(cols, schema=EVENT_SCHEMA)


def read_all(path: Path, **kwargs: Any) -> EventBatch:
    batches = list(iter_event_batches(path, **kwargs))
    return EventBatch(
        pa.concat_tables([b.events for b in batches]) if batches else EVENT_SCHEMA.empty_table(),
        pa.concat_tables([b.dead_letters for b in batches])
        if batches
        else DEAD_LETTER_SCHEMA.empty_table(),
    )


def call_columns(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.select(CALL_FIELDS).to_pylist()
    return rows


def write_small_blocks(path: Path, records: list[dict[str, Any]], codec: str = "null") -> None:
    """Many small blocks (about 1 KiB each) to exercise block handling."""
    with EventFileWriter(path, "null" if codec == "null" else "deflate", block_bytes=1024) as w:
        w.write_table(table_of(records))


def block_offsets(path: Path) -> list[tuple[int, int, int]]:
    """(start, end, count) of each block, as the file frames them."""
    data = path.read_bytes()
    out = []
    pos = parse_header(data).end
    while pos < len(data):
        start = pos
        count, pos = _varint(data, pos)
        size, pos = _varint(data, pos)
        pos += size + 16
        out.append((start, pos, count))
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    acc = shift = 0
    while True:
        b = data[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return (acc >> 1) ^ -(acc & 1), pos


# --------------------------------------------------------------------------- roundtrip


@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("use_polars", [True, False])
def test_roundtrip_table_writer(tmp_path: Path, codec: str, use_polars: bool) -> None:
    records = make_records(500)
    path = tmp_path / "events.avro"
    assert write_events(path, table_of(records), codec="null" if codec == "null" else "deflate")
    got = read_all(path, use_polars=use_polars)
    assert got.dead_letters.num_rows == 0
    assert got.events.schema.equals(EVENT_SCHEMA)
    assert call_columns(got.events) == records
    assert got.events.column("source_file").to_pylist() == [str(path)] * 500
    assert got.events.column("source_index").to_pylist() == list(range(500))
    for name in ("source_topic", "source_partition", "source_offset", "payload"):
        assert got.events.column(name).null_count == 500


def test_roundtrip_dict_writer_is_readable_by_fastavro(tmp_path: Path) -> None:
    records = make_records(300)
    path = tmp_path / "dicts.avro"
    assert write_events(path, records, codec="deflate") == 300
    assert call_columns(read_all(path).events) == records
    with path.open("rb") as fh:
        read_back = [r for r in fastavro.reader(fh) if isinstance(r, dict)]
    assert [r["call_id"] for r in read_back] == [r["call_id"] for r in records]


def test_vectorized_encoder_matches_fastavro_byte_for_byte() -> None:
    records = make_records(400)
    data, ends = encode_table(table_of(records))
    starts = [0, *ends[:-1].tolist()]
    for i, record in enumerate(records):
        assert data[starts[i] : ends[i]].tobytes() == encode_datum(record), i
    assert decode_datum(encode_datum(records[3]))["call_id"] == records[3]["call_id"]


def test_table_writer_refuses_values_the_schema_cannot_hold(tmp_path: Path) -> None:
    bad = table_of(make_records(3)).set_column(
        4, "direction", pa.array(["INBOUND", "SIDEWAYS", "OUTBOUND"])
    )
    with pytest.raises(ValueError, match="direction"):
        write_events(tmp_path / "x.avro", bad)
    assert not (tmp_path / "x.avro").exists()  # nothing half-written is left behind
    assert not (tmp_path / "x.avro.tmp").exists()


def test_events_to_records_roundtrips() -> None:
    records = make_records(20)
    assert events_to_records(table_of(records)) == records


# --------------------------------------------------------------------------- batching


def test_source_index_is_correct_across_batches_and_blocks(tmp_path: Path) -> None:
    records = make_records(2_500)
    path = tmp_path / "many_blocks.avro"
    write_small_blocks(path, records, codec="deflate")
    assert len(block_offsets(path)) > 50
    batches = list(iter_event_batches(path, batch_size=300))
    assert all(0 < b.events.num_rows <= 300 for b in batches)
    index = pa.concat_tables([b.events for b in batches]).column("source_index").to_pylist()
    assert index == list(range(2_500))
    ids = pa.concat_tables([b.events for b in batches]).column("call_id").to_pylist()
    assert ids == [r["call_id"] for r in records]


def test_block_larger_than_batch_size_is_sliced(tmp_path: Path) -> None:
    path = tmp_path / "one_block.avro"
    write_events(path, table_of(make_records(1_000)))  # one 1 MiB block
    sizes = [b.events.num_rows for b in iter_event_batches(path, batch_size=256)]
    assert sizes == [256, 256, 256, 232]


def test_count_records_and_schema_of(tmp_path: Path) -> None:
    path = tmp_path / "c.avro"
    write_small_blocks(path, make_records(777))
    assert count_records(path) == 777
    assert schema_of(path)["name"] == "CallEvent"
    empty = tmp_path / "empty.avro"
    write_events(empty, [])
    assert count_records(empty) == 0
    assert list(iter_event_batches(empty)) == []
    junk = tmp_path / "junk.avro"
    junk.write_bytes(b"call_id,revision\nSW-1,0\n")
    assert count_records(junk) == 0
    with pytest.raises(DataError):
        schema_of(junk)


def test_generated_file_is_reproducible(tmp_path: Path) -> None:
    table = table_of(make_records(100))
    a, b = tmp_path / "a.avro", tmp_path / "b.avro"
    write_events(a, table, sync_marker=b"0123456789abcdef")
    write_events(b, table, sync_marker=b"0123456789abcdef")
    assert a.read_bytes() == b.read_bytes()


# --------------------------------------------------------------------------- schema resolution


def _evolved_schema(
    *, drop: tuple[str, ...] = (), extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    schema = copy.deepcopy(load_call_event_json())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in drop]
    schema["fields"] += extra or []
    return schema


def _write_with(path: Path, schema: dict[str, Any], records: list[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), records, codec="deflate")


@pytest.mark.parametrize(
    "extra_field",
    [
        {"name": "carrier_hint", "type": ["null", "string"], "default": None},
        # polars cannot read maps: the reader must fall back to fastavro
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
    ids=["optional-string", "map"],
)
def test_newer_writer_schema_with_extra_field(tmp_path: Path, extra_field: dict[str, Any]) -> None:
    records = make_records(200)
    value: Any = "X" if extra_field["name"] == "carrier_hint" else {"k": "v"}
    path = tmp_path / "newer.avro"
    _write_with(
        path,
        _evolved_schema(extra=[extra_field]),
        [{**r, extra_field["name"]: value} for r in records],
    )
    got = read_all(path)
    assert got.dead_letters.num_rows == 0
    assert got.events.schema.equals(EVENT_SCHEMA)
    assert call_columns(got.events) == records


def test_older_writer_schema_without_defaulted_fields(tmp_path: Path) -> None:
    dropped = ("revision", "leg", "original_calling_number", "ani_ii")
    records = make_records(150)
    path = tmp_path / "older.avro"
    _write_with(
        path,
        _evolved_schema(drop=dropped),
        [{k: v for k, v in r.items() if k not in dropped} for r in records],
    )
    for use_polars in (True, False):
        got = read_all(path, use_polars=use_polars)
        assert got.dead_letters.num_rows == 0
        events = got.events
        assert events.schema.equals(EVENT_SCHEMA)
        assert set(events.column("revision").to_pylist()) == {0}
        assert set(events.column("leg").to_pylist()) == {"ORIGINAL"}
        assert events.column("original_calling_number").null_count == 150
        assert events.column("ani_ii").null_count == 150
        assert events.column("call_id").to_pylist() == [r["call_id"] for r in records]
        assert events.column("start_time").to_pylist() == [r["start_time"] for r in records]


def test_writer_without_a_required_field_yields_nulls_for_missing_field(tmp_path: Path) -> None:
    """No default for trunk_id: the column is null, the core dead-letters MISSING_FIELD."""
    path = tmp_path / "no_trunk.avro"
    records = [{k: v for k, v in r.items() if k != "trunk_id"} for r in make_records(10)]
    _write_with(path, _evolved_schema(drop=("trunk_id",)), records)
    got = read_all(path)
    assert got.events.num_rows == 10
    assert got.events.column("trunk_id").null_count == 10


def test_promoted_and_millis_types(tmp_path: Path) -> None:
    schema = _evolved_schema()
    for f in schema["fields"]:
        if f["name"] == "duration_ms":
            f["type"] = "int"
        if f["name"] == "start_time":
            f["type"] = {"type": "long", "logicalType": "timestamp-millis"}
    records = make_records(50)
    for r in records:
        r["duration_ms"] = min(r["duration_ms"], 2**31 - 1)
        r["start_time"] = r["start_time"].replace(microsecond=0)
    path = tmp_path / "promoted.avro"
    _write_with(path, schema, records)
    for use_polars in (True, False):
        assert call_columns(read_all(path, use_polars=use_polars).events) == records


def test_incompatible_writer_schema_dead_letters_every_block(tmp_path: Path) -> None:
    schema = _evolved_schema()
    for f in schema["fields"]:
        if f["name"] == "duration_ms":
            f["type"] = "string"
    records = [{**r, "duration_ms": "61s"} for r in make_records(40)]
    path = tmp_path / "incompatible.avro"
    _write_with(path, schema, records)
    got = read_all(path)
    assert got.events.num_rows == 0
    dead = got.dead_letters
    assert set(dead.column("reason").to_pylist()) == {"DECODE_ERROR"}
    assert "duration_ms" in dead.column("detail")[0].as_py()
    assert dead.column("source_index")[0].as_py() == 0
    assert b"".join(dead.column("payload").to_pylist()) in path.read_bytes()


def test_unknown_enum_symbol_is_passed_on_with_the_datum(tmp_path: Path) -> None:
    """R1: a symbol the reader does not know is the core's INVALID_VALUE, as in
    streaming (docs/decisions.md); the event carries the datum as its payload."""
    schema = _evolved_schema()
    for f in schema["fields"]:
        if f["name"] == "disposition":
            f["type"] = {**f["type"], "symbols": [*f["type"]["symbols"], "REJECTED"]}
    records = make_records(30)
    records[7]["disposition"] = "REJECTED"
    path = tmp_path / "enum.avro"
    _write_with(path, schema, records)
    writer = fastavro.parse_schema(schema)
    assert isinstance(writer, dict)
    for use_polars in (True, False):
        got = read_all(path, use_polars=use_polars)
        assert got.events.num_rows == 30
        assert got.dead_letters.num_rows == 0
        assert got.events.column("disposition")[7].as_py() == "REJECTED"
        payloads = got.events.column("payload").to_pylist()
        assert [i for i, p in enumerate(payloads) if p is not None] == [7]
        assert decode_datum(payloads[7], writer)["call_id"] == records[7]["call_id"]
        result = rate_batch(got.events, REF, TARIFFS)
        (dead,) = [
            d for d in result.dead_letters.to_pylist() if d["reason"] == Reason.INVALID_VALUE
        ]
        assert dead["source_index"] == 7
        assert dead["call_id"] == records[7]["call_id"]
        assert dead["payload"] == payloads[7]


# --------------------------------------------------------------------------- damaged files


def _covered(batch: EventBatch, n: int) -> None:
    """Every record index is an event or the start of a dead-lettered stretch, in order."""
    events = batch.events.column("source_index").to_pylist()
    assert events == sorted(events)
    assert len(set(events)) == len(events)
    starts = batch.dead_letters.column("source_index").to_pylist()
    assert all(s is not None and 0 <= s <= n for s in starts)
    assert not set(events) & set(starts)
    # the records between dead-letter starts and the next event are in the payloads
    missing = sorted(set(range(n)) - set(events))
    if missing:
        assert starts
        assert min(starts) <= missing[0]


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_truncated_file(tmp_path: Path, codec: str) -> None:
    records = make_records(400)
    path = tmp_path / "t.avro"
    write_small_blocks(path, records, codec)
    blocks = block_offsets(path)
    start, end, count = blocks[-1]
    data = path.read_bytes()
    path.write_bytes(data[: (start + end) // 2])
    got = read_all(path)
    first_of_last = 400 - count
    events = got.events.column("source_index").to_pylist()
    assert events[:first_of_last] == list(range(first_of_last))
    (dead,) = got.dead_letters.to_pylist()
    assert dead["reason"] == "DECODE_ERROR"
    assert dead["source_index"] == len(events)  # the first record that was not decoded
    assert dead["payload"] == data[start : (start + end) // 2]
    if codec == "null":  # complete records of the cut block are salvaged
        assert len(events) > first_of_last
    assert call_columns(got.events) == records[: len(events)]
    _covered(got, 400)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_garbage_inside_a_block(tmp_path: Path, codec: str) -> None:
    records = make_records(600)
    path = tmp_path / "g.avro"
    write_small_blocks(path, records, codec)
    blocks = block_offsets(path)
    start, end, count = blocks[len(blocks) // 2]
    first = sum(c for _, _, c in blocks[: len(blocks) // 2])
    data = bytearray(path.read_bytes())
    data[start + 4 : end - 16] = b"\xff" * (end - 20 - start)  # framing intact, data garbage
    path.write_bytes(bytes(data))
    for use_polars in (True, False):
        got = read_all(path, use_polars=use_polars)
        (dead,) = got.dead_letters.to_pylist()
        assert dead["reason"] == "DECODE_ERROR"
        assert first <= dead["source_index"] < first + count
        assert dead["payload"] == bytes(data[start:end])
        events = got.events.column("source_index").to_pylist()
        assert events == [i for i in range(600) if not dead["source_index"] <= i < first + count]
        assert call_columns(got.events) == [records[i] for i in events]


def test_damaged_sync_marker_loses_nothing(tmp_path: Path) -> None:
    records = make_records(300)
    path = tmp_path / "s.avro"
    write_small_blocks(path, records, "deflate")
    _, end, _ = block_offsets(path)[3]
    data = bytearray(path.read_bytes())
    data[end - 3] ^= 0xFF
    path.write_bytes(bytes(data))
    got = read_all(path)
    assert got.dead_letters.num_rows == 0
    assert call_columns(got.events) == records
    assert got.events.column("source_index").to_pylist() == list(range(300))


def test_damaged_block_size_resynchronizes(tmp_path: Path) -> None:
    records = make_records(300)
    path = tmp_path / "z.avro"
    write_small_blocks(path, records, "null")
    start = block_offsets(path)[2][0]
    data = bytearray(path.read_bytes())
    _, pos = _varint(bytes(data), start)
    data[pos] ^= 0x10  # the size varint now points elsewhere
    path.write_bytes(bytes(data))
    got = read_all(path)
    assert call_columns(got.events) == records  # salvaged record by record
    assert got.events.column("source_index").to_pylist() == list(range(300))


def test_junk_between_blocks_loses_only_the_junk(tmp_path: Path) -> None:
    records = make_records(300)
    path = tmp_path / "junk_between.avro"
    write_small_blocks(path, records, "deflate")
    blocks = block_offsets(path)
    cut = blocks[4][1]  # after the fifth block
    before = sum(c for _, _, c in blocks[:5])
    junk = b"\xff" * 40 + b"\x02\x04ab"
    data = path.read_bytes()
    path.write_bytes(data[:cut] + junk + data[cut:])
    got = read_all(path)
    assert call_columns(got.events) == records  # nothing but the junk is lost
    (dead,) = got.dead_letters.to_pylist()
    assert dead["payload"] == junk
    assert dead["source_index"] == before
    index = got.events.column("source_index").to_pylist()
    # later indexes count the junk as one record (documented), so none collide
    assert index == list(range(before)) + list(range(before + 1, 301))


def test_trailing_garbage_is_a_dead_letter(tmp_path: Path) -> None:
    records = make_records(100)
    path = tmp_path / "tail.avro"
    write_events(path, table_of(records))
    path.write_bytes(path.read_bytes() + b"\x00" * 100)
    got = read_all(path)
    assert call_columns(got.events) == records
    (dead,) = got.dead_letters.to_pylist()
    assert dead["source_index"] == 100
    assert dead["payload"] == b"\x00" * 100


@pytest.mark.parametrize(
    "content",
    [b"", b"not an avro file at all", b"Obj\x01\x04\x16avro"],
    ids=["empty", "text", "cut-header"],
)
def test_unreadable_header_is_one_dead_letter_with_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.avro"
    path.write_bytes(content)
    (batch,) = list(iter_event_batches(path))
    assert batch.events.num_rows == 0
    assert batch.events.schema.equals(EVENT_SCHEMA)
    (dead,) = batch.dead_letters.to_pylist()
    assert dead["reason"] == "DECODE_ERROR"
    assert dead["source_file"] == str(path)
    assert dead["source_index"] == 0
    assert dead["payload"] == content
    assert batch.dead_letters.schema.equals(DEAD_LETTER_SCHEMA)


def test_dead_letter_payloads_are_split_at_64_mib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(file_reader, "MAX_DEAD_LETTER_PAYLOAD", 10)
    path = tmp_path / "junk.avro"
    path.write_bytes(bytes(range(35)))
    dead = read_all(path).dead_letters.to_pylist()
    assert [len(d["payload"]) for d in dead] == [10, 10, 10, 5]
    assert b"".join(d["payload"] for d in dead) == bytes(range(35))
    assert "part 4 of 4" in dead[-1]["detail"]


def test_schema_helpers() -> None:
    schema = load_call_event_schema()
    assert schema is load_call_event_schema()  # cached
    record = make_records(1)[0]
    buf = io.BytesIO(encode_datum(record))
    assert fastavro.schemaless_reader(buf, schema, None) == record
