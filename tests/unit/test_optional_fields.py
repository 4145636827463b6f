"""Empty optional fields and ANI II validation (issue 10, items 1 and 4; R1, R6, R8, R10).

Switches write ``""`` for "not provided": an optional string field holding ``""`` is
rated and stored exactly like null (R1), on the batch path (an Avro file through
``cdr-pipeline rate``) and on the streaming path (wire decode, numbers parsed on the
decode thread, the enricher's LNP subset, then the core). An ``ani_ii`` that is not
two ASCII digits is ignored by R8, stored as null (it is free text that can carry a
phone number) and flagged ANI_II_INVALID; the call is still rated.

The hypothesis property over every optional field is in ``test_rating_properties.py``.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.io.avro_files import write_events
from pipeline.io.schemas import SCHEMAS_DIR
from pipeline.io.wire import (
    CALL_EVENT_SCHEMA_ID,
    KafkaSources,
    ShippedSchemas,
    call_event_schema,
    decode_batch,
    encode,
)
from pipeline.lake.lake import Lake
from pipeline.rating.numbers import parse_event_numbers
from pipeline.rating.rate import OPTIONAL_STRINGS, REQUIRED, rate_batch
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.refdata.redis_read import RedisReferenceReader
from pipeline.runtime.enrich import Enricher, origin_tns
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.unit.events import event, one, table

FWD = {"direction": "OUTBOUND", "leg": "FORWARDED"}


def _nulled(ev: dict[str, Any]) -> dict[str, Any]:
    """``ev`` with every ``""`` of an optional string field replaced by null."""
    return {k: None if k in OPTIONAL_STRINGS and v == "" else v for k, v in ev.items()}


# ---------------------------------------------------------------- R1, R6: "" is absent


def test_optional_strings_are_the_schemas_strings_that_r1_does_not_require() -> None:
    """R1: every string field of ``schemas/call_event.avsc`` that is neither required by
    R1 nor an enum is optional; switch_id is a string in Avro but R1 does not need it."""
    avsc = json.loads((SCHEMAS_DIR / "call_event.avsc").read_text())
    strings = {
        f["name"]
        for f in avsc["fields"]
        if f["type"] == "string" or f["type"] == ["null", "string"]
    }
    assert set(OPTIONAL_STRINGS) == strings - set(REQUIRED)
    assert set(OPTIONAL_STRINGS) == {
        "calling_number", "original_calling_number", "ani_ii", "switch_id",
    }  # fmt: skip


def test_r6_forwarded_leg_with_an_empty_original_caller_falls_back_to_calling_number() -> None:
    """R1/R6: an empty original_calling_number is absent, so the FORWARDED leg's origin
    is calling_number (NY, ported to a WIRELESS carrier), the leg to IL is INTERSTATE
    at 0.0100 (66 s: 0.011000), with no ORIGIN_UNKNOWN / JURISDICTION_INDETERMINATE.
    Before the fix: origin UNKNOWN, INDETERMINATE at the intrastate 0.0150 (0.016500)."""
    fields = {**FWD, "calling_number": "+12125550100", "called_number": "+13125550199"}
    empty = one(event(**fields, original_calling_number=""))
    assert empty == one(event(**fields, original_calling_number=None))
    assert (empty["origin_region"], empty["origin_state"], empty["jurisdiction"]) == (
        "US48", "NY", "INTERSTATE",
    )  # fmt: skip
    assert empty["origin_carrier_category"] == "WIRELESS"
    assert (empty["rate_per_min"], empty["usage_charge"]) == (D("0.01"), D("0.011000"))
    assert empty["flags"] == []
    assert empty["original_calling_number"] is None  # the lake holds no "" for "not given"


@pytest.mark.parametrize("name", OPTIONAL_STRINGS)
def test_r1_an_empty_optional_string_is_rated_and_stored_as_null(name: str) -> None:
    """R1: ``""`` in any optional string field gives the record of null, with null stored."""
    fields = {**FWD, "called_number": "+13125550199", "original_calling_number": "+19075550100"}
    r = one(event(**{**fields, name: ""}))
    assert r == one(event(**{**fields, name: None}))
    assert r[name] is None


def test_r1_an_empty_calling_number_is_origin_unknown_not_a_dead_letter() -> None:
    """R1: an empty calling_number is a missing one: ORIGIN_UNKNOWN, still rated."""
    r = one(event(calling_number=""))
    assert (r["origin_region"], r["flags"], r["calling_number"]) == (
        "UNKNOWN", ["ORIGIN_UNKNOWN"], None,
    )  # fmt: skip


def test_r1_empty_required_fields_still_dead_letter() -> None:
    """R1: ``""`` in a required field stays MISSING_FIELD (the dead-letter path is unchanged)."""
    result = rate_batch(
        table(event(trunk_id=""), event(call_id="c-2", called_number="")),
        load_reference_dir(SAMPLE_REFDATA_DIR),
        load_tariff_dir(DEFAULT_TARIFFS_DIR),
    )
    assert result.dead_letters.column("reason").to_pylist() == ["MISSING_FIELD"] * 2


# ---------------------------------------------------------------- R8, R10: ANI II


@pytest.mark.parametrize(
    "ani",
    ["+12125550104", "\u0662\u0667", "\uff12\uff17", "7", "270", " 27", "27 ", "27\n", "2a", "x"],
)
def test_r8_an_ani_ii_that_is_not_two_ascii_digits_is_ignored_nulled_and_flagged(
    ani: str,
) -> None:
    """R8/R10: an ani_ii that is not exactly two ASCII digits (a phone number,
    Arabic-Indic or full-width digits, one or three digits, blanks) does not make a
    payphone, is not stored (CPNI), and the call is rated with flag ANI_II_INVALID."""
    r = one(event(calling_number="+12125550100", duration_ms=1, ani_ii=ani))
    assert r["ani_ii"] is None
    assert r["surcharge"] == D("0")
    assert r["flags"] == ["SHORT_CALL", "ANI_II_INVALID"]
    assert r["total_charge"] == r["usage_charge"] == D("0.001500")


@pytest.mark.parametrize(
    ("ani", "stored", "flags"),
    [
        ("27", "27", ["PAYPHONE", "SHORT_CALL"]),
        ("70", "70", ["PAYPHONE", "SHORT_CALL"]),
        ("29", "29", ["SHORT_CALL"]),
        ("00", "00", ["SHORT_CALL"]),
        ("", None, ["SHORT_CALL"]),  # "" is absent (R1), not invalid
        (None, None, ["SHORT_CALL"]),
    ],
)
def test_r8_valid_or_absent_ani_ii_is_not_flagged(
    ani: str | None, stored: str | None, flags: list[str]
) -> None:
    """R8/R10: two ASCII digits are kept as given; absent (null or "") gives no flag."""
    r = one(event(calling_number="+12125550100", duration_ms=1, ani_ii=ani))
    assert (r["ani_ii"], r["flags"]) == (stored, flags)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=16), st.from_regex(r"\A[0-9]{1,3}\Z"), st.none()))
def test_r8_only_two_ascii_digits_reach_the_lake(ani: str | None) -> None:
    """R8/R10: for any ani_ii the call is rated (never dead-lettered); the stored ani_ii is
    two ASCII digits or null; ANI_II_INVALID is set exactly when a non-empty value was
    dropped; PAYPHONE only for a stored tariff payphone digit pair."""
    r = one(event(calling_number="+12125550100", ani_ii=ani))
    two_digits = ani is not None and len(ani) == 2 and ani.isascii() and ani.isdigit()
    assert r["ani_ii"] == (ani if two_digits else None)
    assert ("ANI_II_INVALID" in r["flags"]) == (ani not in (None, "") and not two_digits)
    assert ("PAYPHONE" in r["flags"]) == (r["ani_ii"] in ("27", "70"))


# ---------------------------------------------------------------- batch == streaming

#: Events of the shipped sample with "" in optional fields; 2012458428 is a ported
#: number (LNP -> XK02), so the streaming enricher must look up the calling number of
#: the forwarded leg whose original caller is "".
SAMPLE_EVENTS: list[dict[str, Any]] = [
    event(
        call_id="fwd-empty-original", account_id="ACC-1001", **FWD,
        calling_number="+12012458428", called_number="+13125550199", original_calling_number="",
    ),
    event(
        call_id="fwd-null-original", account_id="ACC-1001", **FWD,
        calling_number="+12012458428", called_number="+13125550199",
    ),
    event(call_id="empty-caller", account_id="ACC-1001", calling_number=""),
    event(call_id="empty-ani", account_id="ACC-1001", ani_ii="", duration_ms=1),
    event(call_id="phone-in-ani", account_id="ACC-1001", ani_ii="+12125550104", duration_ms=1),
    event(call_id="payphone", account_id="ACC-1001", ani_ii="27", duration_ms=1),
    event(call_id="empty-switch", account_id="ACC-1001", switch_id=""),
    event(
        call_id="all-empty", account_id="ACC-1001", **FWD, called_number="+13125550199",
        calling_number="", original_calling_number="", ani_ii="", switch_id="",
    ),
]  # fmt: skip


class MemoryReader:
    """The reads the :class:`Enricher` makes of Redis, answered from reference data in
    memory: a snapshot without LNP, and LNP per looked-up number."""

    def __init__(self, full: ReferenceData) -> None:
        self.full = full
        self.looked_up: list[int] = []

    def current_version(self) -> str:
        return self.full.version

    def snapshot(self) -> ReferenceData:
        return self.full.with_lnp_codes(np.empty(0, np.int64), np.empty(0, np.int32))

    def lookup_lnp_array(self, tns: npt.NDArray[np.int64]) -> tuple[str, pa.Array]:
        self.looked_up.extend(tns.tolist())
        pos = self.full.lnp.find(tns)
        codes = self.full.lnp_ocn[np.maximum(pos, 0)]
        ocns = [self.full.ocns[c] if p >= 0 else None for p, c in zip(pos, codes, strict=True)]
        return self.full.version, pa.array(ocns, pa.string())


def _by_call_id(rated: pa.Table) -> list[dict[str, Any]]:
    keep = [c for c in rated.column_names if not c.startswith("source_")]
    rows: list[dict[str, Any]] = rated.select(keep).to_pylist()
    return sorted(rows, key=lambda r: str(r["call_id"]))


def test_batch_and_streaming_rate_empty_optional_fields_alike(tmp_path: Path) -> None:
    """R1/R6/R8: the same events with ``""`` fields give the same records through
    ``cdr-pipeline rate`` over an Avro file and through the streaming decode (wire
    decoder, numbers parsed before rating, the enricher's LNP subset), and both equal
    the records of the events with null in place of ``""``."""
    ref = load_reference_dir(SAMPLE_REFDATA_DIR)
    tariffs = load_tariff_dir(DEFAULT_TARIFFS_DIR)

    avro = tmp_path / "events.avro"
    write_events(avro, SAMPLE_EVENTS)
    lake = tmp_path / "lake"
    assert main(["rate", "--output", str(lake), str(avro)]) == 0
    batch = pa.concat_tables([Lake(lake).read_rated(c) for c in Lake(lake).cycles()])

    values = [encode(e, CALL_EVENT_SCHEMA_ID, call_event_schema()) for e in SAMPLE_EVENTS]
    n = len(values)
    events, dead = decode_batch(values, KafkaSources("cdr", [0] * n, range(n)), ShippedSchemas())
    assert dead.num_rows == 0
    assert events.column("original_calling_number")[0].as_py() == ""  # decoded as sent
    numbers = parse_event_numbers(events)  # the decode thread's parse
    reader = MemoryReader(ref)
    enricher = Enricher(cast(RedisReferenceReader, reader))
    subset = enricher.for_numbers(origin_tns(events, numbers))
    assert 2012458428 in reader.looked_up  # the fallback origin's LNP was resolved
    streaming = rate_batch(events, subset, tariffs, numbers)
    assert streaming.dead_letters.num_rows == 0

    expected = rate_batch(table(*map(_nulled, SAMPLE_EVENTS)), ref, tariffs).rated
    assert _by_call_id(batch) == _by_call_id(streaming.rated) == _by_call_id(expected)

    rows = {r["call_id"]: r for r in _by_call_id(streaming.rated)}
    fwd = rows["fwd-empty-original"]
    assert {k: v for k, v in fwd.items() if k != "call_id"} == {
        k: v for k, v in rows["fwd-null-original"].items() if k != "call_id"
    }
    assert (fwd["origin_state"], fwd["origin_ocn"], fwd["jurisdiction"], fwd["flags"]) == (
        "NJ", "XK02", "INTERSTATE", [],
    )  # fmt: skip
    assert rows["phone-in-ani"]["ani_ii"] is None
    assert "ANI_II_INVALID" in rows["phone-in-ani"]["flags"]
    assert "PAYPHONE" in rows["payphone"]["flags"]
    for row in rows.values():
        assert "" not in (row[name] for name in OPTIONAL_STRINGS)
