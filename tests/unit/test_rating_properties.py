"""Rating invariants as hypothesis properties (R1 empty fields, R5, R7, R9 and batch
independence)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rating.numbers import parse_event_numbers
from pipeline.rating.rate import OPTIONAL_STRINGS, origin_numbers, rate_batch
from pipeline.runtime.enrich import origin_tns
from tests.unit.events import book, event, table
from tests.unit.refdata_fixture import tiny_reference

REF = tiny_reference()
BOOK = book()
NUMBERS = st.sampled_from(
    [
        "+19075550100", "+14165550100", "+12125550100", "+525555550100", "+18765550100",
        "+442071234567", "+13125550100", "+16715550100", "+19995550100", "+882123456789",
        "bad", None,
    ]
)  # fmt: skip
CALLED = st.sampled_from(
    ["+18005551234", "+18885550000", "+12125550199", "+13125550199", "+442071234567",
     "+525555550100", "+14165550199", "+33123456789", "+19995550199"]
)  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    return event(
        call_id=f"c{draw(st.integers(0, 10**6))}",
        account_id=draw(st.sampled_from(["ACC-1", "ACC-2", "ACC-W"])),
        direction=draw(st.sampled_from(["INBOUND", "OUTBOUND"])),
        leg=draw(st.sampled_from(["ORIGINAL", "FORWARDED"])),
        calling_number=draw(NUMBERS),
        original_calling_number=draw(NUMBERS),
        called_number=draw(CALLED),
        start_time=datetime(2026, 1, 1, tzinfo=UTC)
        + timedelta(microseconds=draw(st.integers(0, 364 * 86_400 * 10**6))),
        duration_ms=draw(st.integers(0, 3 * 3_600_000)),
        disposition=draw(st.sampled_from(["ANSWERED"] * 4 + ["BUSY", "NO_ANSWER"])),
        ani_ii=draw(st.sampled_from([None, "00", "27", "29", "70", "7", "+12125550104"])),
        switch_id=draw(st.sampled_from(["SW-1", None])),
    )


def rated(*evs: dict[str, Any]) -> list[dict[str, Any]]:
    result = rate_batch(table(*evs), REF, BOOK)
    assert result.dead_letters.num_rows == 0
    rows: list[dict[str, Any]] = result.rated.to_pylist()
    return rows


@settings(max_examples=200, deadline=None)
@given(events())
def test_charges_never_negative_and_total_is_sum(ev: dict[str, Any]) -> None:
    """R7-R9: usage, surcharge and total are >= 0 and total = usage + surcharge."""
    (r,) = rated(ev)
    assert r["usage_charge"] >= 0
    assert r["surcharge"] >= 0
    assert r["total_charge"] == r["usage_charge"] + r["surcharge"]
    assert r["usage_charge"].as_tuple().exponent == -6


@settings(max_examples=200, deadline=None)
@given(events(), st.integers(0, 600_000))
def test_charge_never_decreases_as_duration_grows(ev: dict[str, Any], extra_ms: int) -> None:
    """R5/R7: a longer call never costs less and never bills fewer seconds."""
    short, long_ = rated(ev, {**ev, "duration_ms": ev["duration_ms"] + extra_ms})
    assert long_["billable_seconds"] >= short["billable_seconds"]
    assert long_["total_charge"] >= short["total_charge"]


INCREMENTS = {"US_DOMESTIC": (6, 6), "INTERNATIONAL": (30, 6), "MEXICO": (60, 60)}


@settings(max_examples=200, deadline=None)
@given(events())
def test_billable_seconds_land_on_increments(ev: dict[str, Any]) -> None:
    """R5: billable seconds are 0, or initial + k * additional with k >= 0, and cover s."""
    (r,) = rated(ev)
    initial, additional = INCREMENTS[r["increment_class"]]
    b = r["billable_seconds"]
    if r["call_class"] == "NON_BILLABLE":
        assert b == 0
        return
    s = -(-r["duration_ms"] // 1000)
    assert b >= initial
    assert (b - initial) % additional == 0
    assert s <= b < max(s, initial) + additional


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=0, max_size=40), st.data())
def test_rating_any_split_equals_rating_the_whole(
    evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    """rate(a + b) == rate(a) + rate(b) for any split point (rows are independent)."""
    cut = data.draw(st.integers(0, len(evs)))
    whole = rate_batch(table(*evs), REF, BOOK)
    a = rate_batch(table(*evs[:cut]), REF, BOOK)
    b = rate_batch(table(*evs[cut:]), REF, BOOK)
    assert pa.concat_tables([a.rated, b.rated]).equals(whole.rated)
    total = sum((r["total_charge"] for r in whole.rated.to_pylist()), Decimal(0))
    parts = sum((r["total_charge"] for r in a.rated.to_pylist() + b.rated.to_pylist()), Decimal(0))
    assert total == parts


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=0, max_size=40), st.data())
def test_numbers_parsed_by_the_caller_give_the_same_records(
    evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    """R1-R10 with pre-parsed numbers: the streaming service parses the number columns
    once (for enrichment) and hands them to rate_batch; the records and the R1 dead
    letters are the same as when rate_batch parses them itself."""
    if evs:  # some invalid rows, so the parsed numbers are filtered with the events
        bad = data.draw(st.integers(0, len(evs) - 1))
        evs[bad] = {**evs[bad], "account_id": "ACC-NOPE"}
    events_table = table(*evs)
    given_numbers = rate_batch(events_table, REF, BOOK, parse_event_numbers(events_table))
    parsed_inside = rate_batch(events_table, REF, BOOK)
    assert given_numbers.rated.equals(parsed_inside.rated)
    assert given_numbers.dead_letters.equals(parsed_inside.dead_letters)


def test_numbers_of_another_batch_are_refused() -> None:
    one, two = table(event(call_id="a")), table(event(call_id="a"), event(call_id="b"))
    with pytest.raises(ValueError, match="1 parsed numbers for 2 events"):
        rate_batch(two, REF, BOOK, parse_event_numbers(one))


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), min_size=1, max_size=20), st.data())
def test_empty_optional_strings_rate_like_null(
    evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    """R1/R6: setting any subset of the optional string fields (calling_number,
    original_calling_number, ani_ii, switch_id) of any events to ``""`` rates exactly
    like setting them to null: same records (null stored, never ``""``), same dead
    letters, whether rate_batch parses the numbers itself (batch) or is handed them
    parsed before rating (streaming), and the streaming enricher asks LNP for the
    same origin numbers."""
    blanks = [data.draw(st.sets(st.sampled_from(OPTIONAL_STRINGS))) for _ in evs]
    if data.draw(st.booleans()):  # sometimes an invalid row among them
        bad = data.draw(st.integers(0, len(evs) - 1))
        evs[bad] = {**evs[bad], "account_id": "ACC-NOPE"}
    empty = table(*({**e, **dict.fromkeys(b, "")} for e, b in zip(evs, blanks, strict=True)))
    null = table(*({**e, **dict.fromkeys(b, None)} for e, b in zip(evs, blanks, strict=True)))
    expected = rate_batch(null, REF, BOOK)
    for got in (
        rate_batch(empty, REF, BOOK),
        rate_batch(empty, REF, BOOK, parse_event_numbers(empty)),
    ):
        assert got.rated.equals(expected.rated)
        assert got.dead_letters.equals(expected.dead_letters)
    assert np.array_equal(origin_tns(empty), origin_tns(null))
    assert np.array_equal(origin_numbers(empty).digits, origin_numbers(null).digits)
