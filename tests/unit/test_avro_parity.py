"""R1: one bad datum, one dead-letter reason, whichever way it arrives.

The same hand-made datums go through the batch path (records of an Avro container
file, one block each, rated by ``pipeline.batch.rate_files`` as ``cdr-pipeline
rate`` does) and through the streaming path (Confluent-framed messages decoded by
``pipeline.io.wire.decode_batch`` and rated by ``rate_batch``, as the ``run``
service does). Every datum must end with the same outcome on both paths.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.avro.container import block, container_header
from pipeline.avro.schemas import load_call_event_json
from pipeline.avro.varint import zigzag_varint as zz
from pipeline.batch import rate_files
from pipeline.io.avro_files import iter_event_batches
from pipeline.io.wire import KafkaSources, ShippedSchemas, decode_batch, wire_header
from pipeline.lake.lake import Lake
from pipeline.rating.codes import Reason
from pipeline.rating.rate import rate_batch
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

REF = load_reference_dir(SAMPLE_REFDATA_DIR)
TARIFFS = load_tariff_dir(DEFAULT_TARIFFS_DIR)
RATED = "RATED"
WRITER_ID = 2

#: The writer knows one disposition more than the reader (a newer producer).
WRITER = copy.deepcopy(load_call_event_json())
for _f in WRITER["fields"]:
    if _f["name"] == "disposition":
        _f["type"]["symbols"].append("TRANSFERRED")
START_US = int(datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp() * 1_000_000)


def s(text: str | bytes) -> bytes:
    """An Avro string/bytes: length, then the bytes."""
    raw = text if isinstance(text, bytes) else text.encode()
    return zz(len(raw)) + raw


def datum(
    *,
    call_id: bytes = s("c-1"),
    calling: bytes = zz(1) + s("+19075550100"),
    disposition: bytes = zz(0),
    sip: bytes = zz(200),
) -> bytes:
    """A CallEvent datum of WRITER, field by field (ACC-1001 calls New York)."""
    return b"".join(
        [
            call_id,
            zz(0),  # revision
            s("ACC-1001"),
            s("TRK-1"),
            zz(1),  # direction OUTBOUND
            zz(0),  # leg ORIGINAL
            calling,
            s("+12125551234"),
            zz(0),  # original_calling_number null
            zz(START_US),
            zz(61_000),
            disposition,
            zz(0),  # ani_ii null
            sip,
            s("SW-1"),
        ]
    )


GOOD = datum()
#: name -> (datum, the outcome both paths must give)
CASES: dict[str, tuple[bytes, str]] = {
    "good": (GOOD, RATED),
    "truncated": (GOOD[:20], Reason.DECODE_ERROR),
    "empty": (b"", Reason.DECODE_ERROR),
    "trailing garbage": (GOOD + b"\x00\x01", Reason.DECODE_ERROR),
    "unknown enum symbol": (datum(disposition=zz(5)), Reason.INVALID_VALUE),
    "enum index out of range": (datum(disposition=zz(6)), Reason.DECODE_ERROR),
    "wrong union branch": (datum(calling=zz(2) + s("+1")), Reason.DECODE_ERROR),
    "negative union branch": (datum(calling=zz(-1)), Reason.DECODE_ERROR),
    "negative length": (datum(call_id=zz(-5)), Reason.DECODE_ERROR),
    "overlong varint": (datum(sip=b"\xff" * 10 + b"\x01"), Reason.DECODE_ERROR),
    "invalid utf-8": (datum(call_id=s(b"\xff\xfe")), Reason.DECODE_ERROR),
    "int beyond 32 bits": (datum(sip=zz(2**40)), Reason.DECODE_ERROR),
    "random bytes": (bytes(range(7, 90, 3)), Reason.DECODE_ERROR),
}
NAMES = list(CASES)


def _outcomes(rated: pa.Table, dead: pa.Table, position: str) -> dict[int, str]:
    out = {int(i): RATED for i in rated.column(position).to_pylist()}
    for i, reason in zip(
        dead.column(position).to_pylist(), dead.column("reason").to_pylist(), strict=True
    ):
        assert int(i) not in out, f"datum {i} ended twice"
        out[int(i)] = reason
    return out


def _write_file(path: Path) -> None:
    """One datum per block, so a bad datum cannot hide a good one."""
    sync = os.urandom(16)
    with path.open("wb") as fh:
        fh.write(container_header(WRITER, "null", sync))
        for data, _ in CASES.values():
            fh.write(block(1, data, sync))


def batch_outcomes(path: Path, lake_dir: Path) -> dict[int, str]:
    """``cdr-pipeline rate``: the batch runner into a lake."""
    lake = Lake(lake_dir)
    rate_files([path], lake, REF, TARIFFS)
    rated = pa.concat_tables([lake.read_rated(c) for c in lake.cycles()])
    return _outcomes(rated, lake.read_dead_letters(), "source_index")


def batch_outcomes_fastavro(path: Path, lake_dir: Path) -> dict[int, str]:
    """The file reader without polars, rated batch by batch."""
    rated, dead = [], []
    for batch in iter_event_batches(path, use_polars=False):
        result = rate_batch(batch.events, REF, TARIFFS)
        rated.append(result.rated)
        dead += [batch.dead_letters, result.dead_letters.cast(batch.dead_letters.schema)]
    return _outcomes(pa.concat_tables(rated), pa.concat_tables(dead), "source_index")


def stream_outcomes(columnar: bool) -> dict[int, str]:
    """``cdr-pipeline run``: decode a polled batch, then rate it."""
    values: list[bytes | None] = [wire_header(WRITER_ID) + d for d, _ in CASES.values()]
    resolver = ShippedSchemas({1: load_call_event_json(), WRITER_ID: WRITER})
    sources = KafkaSources("cdr", [0] * len(values), list(range(len(values))))
    events, dead = decode_batch(values, sources, resolver, columnar=columnar)
    result = rate_batch(events, REF, TARIFFS)
    return _outcomes(
        result.rated,
        pa.concat_tables([dead, result.dead_letters.cast(dead.schema)]),
        "source_offset",
    )


def _named(outcomes: dict[int, str]) -> dict[str, str]:
    return {NAMES[i]: str(outcome) for i, outcome in sorted(outcomes.items())}


EXPECTED = {name: str(outcome) for name, (_, outcome) in CASES.items()}


@pytest.mark.parametrize(
    "batch", [batch_outcomes, batch_outcomes_fastavro], ids=["rate", "rate-fastavro"]
)
@pytest.mark.parametrize("columnar", [True, False], ids=["run", "run-fastavro"])
def test_same_bad_datum_same_reason_on_both_paths(
    tmp_path: Path, batch: Callable[[Path, Path], dict[int, str]], columnar: bool
) -> None:
    """R1: each datum ends once, with the same reason in batch and in streaming."""
    path = tmp_path / "bad.avro"
    _write_file(path)
    from_batch = _named(batch(path, tmp_path / "lake"))
    from_stream = _named(stream_outcomes(columnar))
    assert from_batch == from_stream
    assert from_batch == EXPECTED


def test_bad_datums_among_good_ones_in_one_block(tmp_path: Path) -> None:
    """Inside a block a datum has no end of its own: a bad value spoils only its
    record; a structural error spoils the rest of its block, never another block."""
    sync = os.urandom(16)
    path = tmp_path / "mixed.avro"
    with path.open("wb") as fh:
        fh.write(container_header(WRITER, "null", sync))
        fh.write(block(4, GOOD + datum(sip=zz(2**40)) + datum(disposition=zz(5)) + GOOD, sync))
        fh.write(block(3, GOOD + datum(calling=zz(2) + s("+1")) + GOOD, sync))
        fh.write(block(1, GOOD, sync))
    got = batch_outcomes(path, tmp_path / "lake")
    assert got == {
        0: RATED,
        1: Reason.DECODE_ERROR,  # int beyond 32 bits: that record only
        2: Reason.INVALID_VALUE,  # unknown symbol: the core's answer
        3: RATED,
        4: RATED,
        5: Reason.DECODE_ERROR,  # wrong union branch: records 5..6, one dead letter
        7: RATED,
    }
