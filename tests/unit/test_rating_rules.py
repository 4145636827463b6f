"""Rules R1-R11 of spec section 3, each by id, with the worked examples of section 5."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from tests.unit.events import NOV, book, event, one, rate

# ---------------------------------------------------------------- section 5


def test_example_1_alaska_toll_free_offshore() -> None:
    """Section 5 row 1: ALASKA, s=62 -> 66 s at 0.45/min = 0.495000, OFFSHORE (R4-R7)."""
    r = one(event())
    assert (r["call_class"], r["origin_region"], r["increment_class"]) == (
        "TOLL_FREE", "ALASKA", "US_DOMESTIC",
    )  # fmt: skip
    assert r["billable_seconds"] == 66
    assert r["rate_per_min"] == D("0.45")
    assert r["usage_charge"] == D("0.495000")
    assert r["flags"] == ["OFFSHORE"]


def test_example_2_canada_toll_free_international_increments() -> None:
    """Section 5 row 2: CANADA -> INTERNATIONAL 30 s minimum at 0.08 = 0.040000."""
    r = one(event(calling_number="+14165550100", called_number="+18885551234", duration_ms=12_000))
    assert (r["origin_region"], r["increment_class"], r["billable_seconds"]) == (
        "CANADA", "INTERNATIONAL", 30,
    )  # fmt: skip
    assert (r["rate_per_min"], r["usage_charge"]) == (D("0.08"), D("0.040000"))
    assert r["flags"] == ["OFFSHORE"]


def test_example_3_payphone_short_call() -> None:
    """Section 5 row 3: 1 ms from US48 with ANI II 27: 6 s, 0.001500 + 0.60 = 0.601500."""
    r = one(
        event(
            calling_number="+12125550100", called_number="+18445551234", duration_ms=1, ani_ii="27"
        )
    )
    assert (r["origin_region"], r["billable_seconds"], r["rate_per_min"]) == ("US48", 6, D("0.015"))
    assert (r["usage_charge"], r["surcharge"], r["total_charge"]) == (
        D("0.001500"), D("0.600000"), D("0.601500"),
    )  # fmt: skip
    assert r["flags"] == ["PAYPHONE", "SHORT_CALL"]


def test_example_4_mexico_origin_60_60() -> None:
    """Section 5 row 4: MEXICO origin, s=61 -> 120 s at the flat 0.0150 = 0.030000."""
    r = one(event(calling_number="+525555550100", duration_ms=61_000))
    assert (r["origin_region"], r["increment_class"], r["billable_seconds"]) == (
        "MEXICO",
        "MEXICO",
        120,
    )
    assert r["usage_charge"] == D("0.030000")
    assert r["flags"] == []


def test_example_5_caller_missing_origin_unknown() -> None:
    """Section 5 row 5: no caller -> UNKNOWN, US_DOMESTIC, 12 s, 0.003000, ORIGIN_UNKNOWN."""
    r = one(event(calling_number=None, duration_ms=7_000))
    assert (r["origin_region"], r["increment_class"], r["billable_seconds"]) == (
        "UNKNOWN", "US_DOMESTIC", 12,
    )  # fmt: skip
    assert r["usage_charge"] == D("0.003000")
    assert r["flags"] == ["ORIGIN_UNKNOWN"]


def test_example_6_outbound_intrastate() -> None:
    """Section 5 row 6: OUTBOUND IL -> IL, 30 s at the intrastate rate."""
    r = one(event(direction="OUTBOUND", calling_number="+13125550100", called_number="+13125550199",
                  duration_ms=30_000))  # fmt: skip
    assert (r["call_class"], r["jurisdiction"], r["billable_seconds"]) == (
        "OUTBOUND_LD",
        "INTRASTATE",
        30,
    )
    assert r["rate_per_min"] == D("0.0150")
    assert r["usage_charge"] == D("0.007500")


@pytest.mark.parametrize("disposition", ["BUSY", "NO_ANSWER", "FAILED", "CANCELLED"])
def test_example_7_unanswered_non_billable(disposition: str) -> None:
    """Section 5 row 7 / R2: any BUSY (or other unanswered) call: NON_BILLABLE, 0 s, 0."""
    r = one(event(disposition=disposition, duration_ms=0))
    assert (r["call_class"], r["billable_seconds"], r["total_charge"]) == ("NON_BILLABLE", 0, D(0))
    assert r["rate_per_min"] == D(0)


# ---------------------------------------------------------------- R1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"duration_ms": -1}, "NEGATIVE_DURATION"),
        ({"account_id": "ACC-404"}, "UNKNOWN_ACCOUNT"),
        ({"called_number": "12125550100"}, "MALFORMED_CALLED_NUMBER"),
        ({"called_number": "+1212555010"}, "MALFORMED_CALLED_NUMBER"),
        ({"called_number": "+121255501000"}, "MALFORMED_CALLED_NUMBER"),
        ({"called_number": "+0123456789"}, "MALFORMED_CALLED_NUMBER"),
        ({"called_number": "+4412345"}, "MALFORMED_CALLED_NUMBER"),
        ({"called_number": None}, "MISSING_FIELD"),
        ({"call_id": ""}, "MISSING_FIELD"),
        ({"account_id": None}, "MISSING_FIELD"),
        ({"start_time": None}, "MISSING_FIELD"),
        ({"direction": "SIDEWAYS"}, "INVALID_VALUE"),
        ({"start_time": datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)}, "NO_TARIFF_IN_EFFECT"),
    ],
)
def test_r1_invalid_events_are_dead_lettered(fields: dict[str, object], reason: str) -> None:
    """R1: each invalid event becomes one dead letter with a stable reason code."""
    result = rate(event(**{"call_id": "bad", **fields}), event(call_id="good"))
    assert result.rated.column("call_id").to_pylist() == ["good"]
    dead = result.dead_letters.to_pylist()
    assert [d["reason"] for d in dead] == [reason]
    assert "+1" not in dead[0]["detail"]
    assert "555" not in dead[0]["detail"]


def test_r1_reason_precedence_is_stable() -> None:
    """R1: an event with several problems gets the first in the documented order."""
    result = rate(event(duration_ms=-5, account_id="nope", called_number="bad"))
    assert result.dead_letters.column("reason").to_pylist() == ["NEGATIVE_DURATION"]


@pytest.mark.parametrize("calling", [None, "2125550100", "+1907", "+1999555010x"])
def test_r1_missing_or_malformed_calling_number_is_not_an_error(calling: str | None) -> None:
    """R1/R10: a missing or malformed calling_number rates with ORIGIN_UNKNOWN."""
    r = one(event(calling_number=calling))
    assert r["origin_region"] == "UNKNOWN"
    assert "ORIGIN_UNKNOWN" in r["flags"]


def test_r1_dead_letter_keeps_source_and_payload() -> None:
    """R1: a dead letter carries call_id, revision, source and payload."""
    ev = event(call_id="x-9", revision=3, duration_ms=-1)
    t = __import__("tests.unit.events", fromlist=["table"]).table(ev)
    import pyarrow as pa

    t = t.set_column(
        t.schema.get_field_index("payload"), "payload", pa.array([b"raw"], pa.binary())
    )
    t = t.set_column(t.schema.get_field_index("source_file"), "source_file", pa.array(["f.avro"]))
    from pipeline.rating.rate import rate_batch
    from tests.unit.refdata_fixture import tiny_reference

    dead = rate_batch(t, tiny_reference(), book()).dead_letters.to_pylist()[0]
    assert (dead["call_id"], dead["revision"], dead["payload"], dead["source_file"]) == (
        "x-9", 3, b"raw", "f.avro",
    )  # fmt: skip


# ---------------------------------------------------------------- R2, R3


def test_r2_answered_zero_duration_is_non_billable() -> None:
    """R2: ANSWERED with duration_ms == 0 is NON_BILLABLE, and is still written."""
    r = one(event(duration_ms=0))
    assert (r["call_class"], r["billable_seconds"], r["flags"]) == ("NON_BILLABLE", 0, [])


@pytest.mark.parametrize("npa", ["800", "833", "844", "855", "866", "877", "888"])
def test_r3_toll_free_npas(npa: str) -> None:
    """R3: INBOUND to each toll-free NPA is TOLL_FREE."""
    assert one(event(called_number=f"+1{npa}5551234"))["call_class"] == "TOLL_FREE"


def test_r3_other_inbound_is_did_at_the_did_rate() -> None:
    """R3/R6: other INBOUND is DID, rated at the tariff's DID rate (0 by default)."""
    r = one(event(called_number="+12125550199"))
    assert (r["call_class"], r["rate_per_min"], r["total_charge"]) == ("DID", D(0), D(0))
    r = one(event(called_number="+12125550199", account_id="ACC-W"))
    assert (r["rate_per_min"], r["usage_charge"]) == (D("0.0010"), D("0.001100"))


def test_r3_outbound_original_and_forwarded() -> None:
    """R3: OUTBOUND ORIGINAL -> OUTBOUND_LD; OUTBOUND FORWARDED -> FORWARDED."""
    out = {"direction": "OUTBOUND", "called_number": "+13125550199"}
    assert one(event(**out))["call_class"] == "OUTBOUND_LD"
    assert one(event(**out, leg="FORWARDED"))["call_class"] == "FORWARDED"


# ---------------------------------------------------------------- R4, R5


@pytest.mark.parametrize(
    ("calling", "region", "inc"),
    [
        ("+12125550100", "US48", "US_DOMESTIC"),
        ("+18085550100", "HAWAII", "US_DOMESTIC"),
        ("+16845550100", "AMERICAN_SAMOA", "US_DOMESTIC"),
        ("+19995550100", "UNKNOWN", "US_DOMESTIC"),
        ("+525555550100", "MEXICO", "MEXICO"),
        ("+14165550100", "CANADA", "INTERNATIONAL"),
        ("+18765550100", "CARIBBEAN", "INTERNATIONAL"),
        ("+442071234567", "INTERNATIONAL", "INTERNATIONAL"),
    ],
)
def test_r4_inbound_increment_class_by_origin(calling: str, region: str, inc: str) -> None:
    """R4 with R-REGION: inbound calls by origin."""
    r = one(event(calling_number=calling))
    assert (r["origin_region"], r["increment_class"]) == (region, inc)


@pytest.mark.parametrize(
    ("called", "inc"),
    [
        ("+13125550199", "US_DOMESTIC"),
        ("+525555550100", "MEXICO"),
        ("+14165550100", "INTERNATIONAL"),
    ],
)
def test_r4_outbound_increment_class_by_destination(called: str, inc: str) -> None:
    """R4: outbound legs by destination (origin Alaska does not matter)."""
    assert one(event(direction="OUTBOUND", called_number=called))["increment_class"] == inc


@pytest.mark.parametrize(
    ("calling", "duration_ms", "seconds"),
    [
        ("+12125550100", 1, 6),
        ("+12125550100", 6_000, 6),
        ("+12125550100", 6_001, 12),
        ("+12125550100", 30_000, 30),
        ("+12125550100", 60_000, 60),
        ("+12125550100", 60_001, 66),
        ("+14165550100", 1, 30),
        ("+14165550100", 6_000, 30),
        ("+14165550100", 30_000, 30),
        ("+14165550100", 30_001, 36),
        ("+14165550100", 60_000, 60),
        ("+525555550100", 1, 60),
        ("+525555550100", 60_000, 60),
        ("+525555550100", 60_001, 120),
    ],
)
def test_r5_billable_seconds_boundaries(calling: str, duration_ms: int, seconds: int) -> None:
    """R5: US 6/6, INTERNATIONAL 30/6, MEXICO 60/60 at 1 ms, 6.000 s, 6.001 s, 30 s, 60 s."""
    assert (
        one(event(calling_number=calling, duration_ms=duration_ms))["billable_seconds"] == seconds
    )


def test_r5_increments_come_from_the_tariff() -> None:
    """R5: increments are tariff parameters, not constants."""
    tariffs = book(increments={"US_DOMESTIC": [30, 6]})
    assert (
        one(event(calling_number="+12125550100", duration_ms=1), tariffs=tariffs)[
            "billable_seconds"
        ]
        == 30
    )


# ---------------------------------------------------------------- R6


@pytest.mark.parametrize(
    ("calling", "region", "rate"),
    [
        ("+19075550100", "ALASKA", "0.45"),
        ("+14165550100", "CANADA", "0.08"),
        ("+16705550100", "CNMI", "0.30"),
        ("+16715550100", "GUAM", "0.15"),
        ("+18085550100", "HAWAII", "0.05"),
        ("+17875550100", "PUERTO_RICO", "0.19"),
        ("+13405550100", "USVI", "0.18"),
    ],
)
def test_r6_offshore_toll_free_rates(calling: str, region: str, rate: str) -> None:
    """R6: toll-free from an offshore region gets that region's rate and OFFSHORE."""
    r = one(event(calling_number=calling))
    assert (r["origin_region"], r["rate_per_min"]) == (region, D(rate))
    assert "OFFSHORE" in r["flags"]


def test_r6_flat_toll_free_rate_account_override() -> None:
    """R6: the flat domestic toll-free rate is the account's override, else the tariff's."""
    assert one(event(calling_number="+12125550100"))["rate_per_min"] == D("0.0150")
    assert one(event(calling_number="+12125550100", account_id="ACC-2"))["rate_per_min"] == D(
        "0.0120"
    )
    # the override does not replace an offshore rate
    assert one(event(account_id="ACC-2"))["rate_per_min"] == D("0.45")
    # American Samoa has no offshore rate in the tariff: flat rate, no OFFSHORE
    r = one(event(calling_number="+16845550100"))
    assert (r["rate_per_min"], r["flags"]) == (D("0.0150"), [])


def test_r6_toll_free_dialled_is_free() -> None:
    """R6: OUTBOUND_LD / FORWARDED to a toll-free number: rate 0, TOLL_FREE_DIALED."""
    for leg in ("ORIGINAL", "FORWARDED"):
        r = one(
            event(direction="OUTBOUND", leg=leg, called_number="+18775550100", duration_ms=90_000)
        )
        assert (r["rate_per_min"], r["total_charge"], r["jurisdiction"]) == (D(0), D(0), None)
        assert r["flags"] == ["TOLL_FREE_DIALED"]
        assert r["billable_seconds"] == 90


@pytest.mark.parametrize(
    ("calling", "called", "jurisdiction", "rate"),
    [
        ("+12125550100", "+13125550199", "INTERSTATE", "0.0100"),  # NY -> IL
        ("+13125550100", "+17735550199", "INTRASTATE", "0.0150"),  # IL -> IL across NPAs
        ("+12015550100", "+12125550199", "INTERSTATE", "0.0100"),  # 201-555 block is NJ
        ("+14165550100", "+12125550199", "INTERSTATE", "0.0100"),  # Canada origin: another state
        ("+442071234567", "+12125550199", "INTERSTATE", "0.0100"),
        (None, "+12125550199", "INDETERMINATE", "0.0150"),
        ("+19995550100", "+12125550199", "INDETERMINATE", "0.0150"),  # NPA not in table
        ("+12125550100", "+19995550199", "INDETERMINATE", "0.0150"),  # destination state unknown
    ],
)
def test_r6_long_distance_jurisdiction(
    calling: str | None, called: str, jurisdiction: str, rate: str
) -> None:
    """R6: INTRASTATE when states are equal, INTERSTATE otherwise (a known non-US origin
    counts as another state), INDETERMINATE at the intrastate rate when a state is unknown."""
    r = one(event(direction="OUTBOUND", calling_number=calling, called_number=called))
    assert (r["jurisdiction"], r["rate_per_min"]) == (jurisdiction, D(rate))
    assert ("JURISDICTION_INDETERMINATE" in r["flags"]) == (jurisdiction == "INDETERMINATE")


def test_r6_forwarded_leg_uses_original_caller() -> None:
    """R6: a FORWARDED leg's origin is original_calling_number, else calling_number."""
    fwd = {"direction": "OUTBOUND", "leg": "FORWARDED", "called_number": "+13125550199"}
    r = one(event(**fwd, calling_number="+12125550100", original_calling_number="+17735550100"))
    assert (r["jurisdiction"], r["origin_state"]) == ("INTRASTATE", "IL")
    r = one(event(**fwd, calling_number="+12125550100", original_calling_number=None))
    assert (r["jurisdiction"], r["origin_state"]) == ("INTERSTATE", "NY")
    # OUTBOUND_LD ignores original_calling_number
    r = one(event(**{**fwd, "leg": "ORIGINAL"}, calling_number="+12125550100",
                  original_calling_number="+17735550100"))  # fmt: skip
    assert r["jurisdiction"] == "INTERSTATE"


@pytest.mark.parametrize(
    ("called", "rate"),
    [
        ("+442071234567", "0.0250"),  # longest prefix 4420 beats 44
        ("+441611234567", "0.0300"),
        ("+919876543210", "0.0800"),
        ("+14165550199", "0.0200"),  # CANADA region rate
        ("+18765550199", "0.1500"),  # CARIBBEAN
        ("+525555550199", "0.0500"),  # MEXICO
        ("+33123456789", "0.2500"),  # default
    ],
)
def test_r6_international_table(called: str, rate: str) -> None:
    """R6: non-US destinations: longest prefix, else region rate, else default."""
    r = one(event(direction="OUTBOUND", called_number=called))
    assert (r["rate_per_min"], r["jurisdiction"]) == (D(rate), "INTERNATIONAL")


# ---------------------------------------------------------------- R7-R9


def test_r7_rounds_half_up_to_six_places() -> None:
    """R7: 30 s at 0.000001/min = 0.0000005 -> 0.000001 (half-up); 18 s -> 0.0000003 -> 0."""
    tariffs = book(did_per_min="0.000001")
    did = {"called_number": "+12125550199", "calling_number": "+12125550100"}
    assert one(event(**did, duration_ms=30_000), tariffs=tariffs)["usage_charge"] == D("0.000001")
    assert one(event(**did, duration_ms=18_000), tariffs=tariffs)["usage_charge"] == D("0.000000")


@pytest.mark.parametrize(
    ("ani", "payphone"), [("27", True), ("70", True), ("29", False), ("00", False), (None, False)]
)
def test_r8_payphone_surcharge(ani: str | None, payphone: bool) -> None:
    """R8: ANI II 27 and 70 are payphones (29 is inmate service): 0.60 per call."""
    r = one(event(calling_number="+12125550100", ani_ii=ani))
    assert (r["surcharge"] == D("0.60")) == payphone
    assert ("PAYPHONE" in r["flags"]) == payphone
    assert r["total_charge"] == r["usage_charge"] + r["surcharge"]  # R9


def test_r8_payphone_only_on_toll_free() -> None:
    """R8: the surcharge applies to TOLL_FREE only, not DID or unanswered calls."""
    assert one(event(called_number="+12125550199", ani_ii="27"))["surcharge"] == D(0)
    assert one(event(disposition="BUSY", duration_ms=0, ani_ii="27"))["surcharge"] == D(0)


# ---------------------------------------------------------------- R10, R11


@pytest.mark.parametrize(
    ("duration_ms", "short"), [(1, True), (6_000, True), (6_001, False), (0, False)]
)
def test_r10_short_call(duration_ms: int, short: bool) -> None:
    """R10: SHORT_CALL on answered calls with s <= 6 (seconds before increments)."""
    assert ("SHORT_CALL" in one(event(duration_ms=duration_ms))["flags"]) == short


def test_r10_fraud_suspect_still_rated() -> None:
    """R10: a blocklisted calling or called prefix flags FRAUD_SUSPECT; still rated."""
    r = one(event(calling_number="+882123456789"))
    assert "FRAUD_SUSPECT" in r["flags"]
    assert r["usage_charge"] > 0
    r = one(event(direction="OUTBOUND", called_number="+18765551234"))
    assert "FRAUD_SUSPECT" in r["flags"]
    assert r["rate_per_min"] == D("0.15")
    assert (
        "FRAUD_SUSPECT"
        not in one(event(direction="OUTBOUND", called_number="+18765561234"))["flags"]
    )


@pytest.mark.parametrize(
    ("start", "rate", "version"),
    [
        (
            datetime(2026, 11, 15, 23, 59, 59, 999_999, tzinfo=UTC),
            "0.45",
            "standard@2026-01-01T00:00:00Z",
        ),
        (datetime(2026, 11, 16, 0, 0, tzinfo=UTC), "0.44", "standard@2026-11-16T00:00:00Z"),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "0.45", "standard@2026-01-01T00:00:00Z"),
    ],
)
def test_r11_version_switch(start: datetime, rate: str, version: str) -> None:
    """R11: the version in effect at start_time rates the call and is named; the second
    version changes ALASKA and keeps CANADA (merged key by key)."""
    r = one(event(start_time=start))
    assert (r["rate_per_min"], r["tariff_version"]) == (D(rate), version)
    assert one(event(start_time=start, calling_number="+14165550100"))["rate_per_min"] == D("0.08")


@pytest.mark.parametrize(
    ("start", "cycle"),
    [
        (datetime(2026, 10, 31, 23, 59, 59, 999_999, tzinfo=UTC), "2026-10"),
        (datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "2026-11"),
    ],
)
def test_billing_cycle_is_utc_month_of_start_time(start: datetime, cycle: str) -> None:
    """Section 3: billing_cycle is YYYY-MM of start_time in UTC (month boundary)."""
    assert one(event(start_time=start))["billing_cycle"] == cycle


def test_r_carrier_precedence_lnp_block_npanxx() -> None:
    """R-CARRIER: ported number first, then the thousands block, then the NPA-NXX."""
    assert one(event(calling_number="+12125550100"))["origin_carrier_category"] == "WIRELESS"  # LNP
    assert one(event(calling_number="+12125550199"))["origin_carrier_category"] == "CLEC"  # 2125550
    assert one(event(calling_number="+12125551199"))["origin_carrier_category"] == "RBOC"  # 212555
    assert one(event(calling_number="+12125561199"))["origin_carrier_category"] == "UNKNOWN"
    r = one(event(calling_number="+12125551199"))
    assert r["origin_ocn"] == "9101"


def test_empty_batch() -> None:
    """An empty batch rates to empty tables of the right schemas."""
    result = rate()
    assert result.rated.num_rows == 0
    assert result.dead_letters.num_rows == 0


def test_revision_defaults_and_passes_through() -> None:
    """Section 1: revision is carried to the rated record (C1 keeps the highest)."""
    assert one(event(revision=2))["revision"] == 2
    assert NOV.tzinfo is UTC


def test_r1_implausible_duration_is_dead_lettered() -> None:
    """R1 (decision): a leg longer than 7 days is a switch error, not a charge; the
    bound also keeps integer micro-dollar arithmetic exact."""
    week = 7 * 24 * 3600 * 1000
    assert one(event(duration_ms=week))["billable_seconds"] == 7 * 24 * 3600
    result = rate(event(duration_ms=week + 1), event(call_id="max", duration_ms=2**63 - 1))
    assert result.dead_letters.column("reason").to_pylist() == ["IMPLAUSIBLE_DURATION"] * 2


def test_r10_fraud_suspect_on_the_original_caller_of_a_forwarded_leg() -> None:
    """R10 (decision): the original caller of a FORWARDED leg is its calling party
    (the origin R6 uses); an OUTBOUND_LD leg ignores original_calling_number."""
    fwd = {
        "direction": "OUTBOUND",
        "called_number": "+13125550199",
        "original_calling_number": "+18765550100",
    }
    assert "FRAUD_SUSPECT" in one(event(**fwd, leg="FORWARDED"))["flags"]
    assert "FRAUD_SUSPECT" not in one(event(**fwd, leg="ORIGINAL"))["flags"]
