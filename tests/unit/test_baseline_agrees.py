"""Differential test: the vectorized core (:func:`rate_batch`) against an independent
per-record implementation of R1-R11 (``benchmarks/baseline.py``, plain Python and
``Decimal``, written from the spec and ``docs/decisions.md`` alone).

The two must agree field by field on every rated record and on every dead-letter
reason, on generated traffic and on hand-written corner cases. Two disagreements this
test found (FRAUD_SUSPECT on ``original_calling_number`` of any leg; int64 overflow of
R7 for absurd durations) were decided in ``docs/decisions.md`` (R10, R1
``IMPLAUSIBLE_DURATION``); :func:`test_decided_corner_cases` pins those decisions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from benchmarks.baseline import (
    RATED_FIELDS,
    DeadLetter,
    Refs,
    load_lnp_dict,
    load_refs,
    rate_event,
)
from pipeline.generate import generate_events
from pipeline.rating.columns import EVENT_SCHEMA
from pipeline.rating.rate import rate_batch
from pipeline.rating.reference import ReferenceData
from pipeline.rating.tariffs import TariffBook
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

N_EVENTS = 20_000
SEED = 11
WHEN = datetime(2026, 11, 5, 12, tzinfo=UTC)  # standard tariff, first version


class Oracle:
    """Both implementations over the shipped sample reference data and tariffs."""

    def __init__(self) -> None:
        self.ref: ReferenceData = load_reference_dir(SAMPLE_REFDATA_DIR)
        self.book: TariffBook = load_tariff_dir(DEFAULT_TARIFFS_DIR)
        self.refs: Refs = load_refs(SAMPLE_REFDATA_DIR)
        self.lnp = load_lnp_dict(SAMPLE_REFDATA_DIR)

    def core(self, events: pa.Table) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        result = rate_batch(events, self.ref, self.book)
        return result.rated.to_pylist(), result.dead_letters.to_pylist()

    def baseline(self, event: Mapping[str, Any]) -> dict[str, Any] | DeadLetter:
        return rate_event(event, self.refs, self.lnp.get, self.book)


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle()


def _normal(field: str, value: Any) -> Any:
    """Flags are compared as sets: the spec gives them no order."""
    return sorted(value) if field == "flags" else value


def _differences(core: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        f: (core[f], base[f]) for f in RATED_FIELDS if _normal(f, core[f]) != _normal(f, base[f])
    }


def _compare(oracle: Oracle, events: pa.Table) -> tuple[list[str], Counter[str]]:
    """Disagreements (no phone numbers in them) and what the rated rows covered."""
    rows = events.to_pylist()
    core_rated, core_dead = oracle.core(events)
    expected = [oracle.baseline(r) for r in rows]
    pairs = zip(rows, expected, strict=True)
    base_rated = [(r, e) for r, e in pairs if not isinstance(e, DeadLetter)]
    base_dead = [
        (r["call_id"], e.reason)
        for r, e in zip(rows, expected, strict=True)
        if isinstance(e, DeadLetter)
    ]
    problems: list[str] = []
    if [(d["call_id"], d["reason"]) for d in core_dead] != base_dead:
        problems.append(
            f"dead letters differ: core {Counter(d['reason'] for d in core_dead)} "
            f"baseline {Counter(r for _, r in base_dead)}"
        )
    if len(core_rated) != len(base_rated):
        problems.append(f"rated rows: core {len(core_rated)}, baseline {len(base_rated)}")
        return problems, Counter()
    covered: Counter[str] = Counter()
    for core, (event, base) in zip(core_rated, base_rated, strict=True):
        assert isinstance(base, dict)
        covered.update(
            [
                core["call_class"],
                f"J:{core['jurisdiction']}",
                core["tariff_version"],
                *core["flags"],
            ]
        )
        diff = _differences(core, base)
        if diff:
            problems.append(
                f"call_id={core['call_id']} direction={event['direction']} leg={event['leg']} "
                f"disposition={event['disposition']} duration_ms={event['duration_ms']}: "
                + "; ".join(f"{f}: core={c!r} baseline={b!r}" for f, (c, b) in diff.items())
            )
    return problems, covered


def test_core_agrees_with_baseline_on_generated_traffic(oracle: Oracle) -> None:
    """R1-R11 on 20,000 synthetic events of the shipped sample: row for row, every field."""
    events = generate_events(N_EVENTS, seed=SEED, refdata_dir=SAMPLE_REFDATA_DIR)
    problems, covered = _compare(oracle, events)
    assert not problems, f"{len(problems)} disagreement(s), first ones:\n" + "\n".join(
        problems[:10]
    )
    # the traffic exercised every class, jurisdiction, flag and tariff version
    for expected in (
        "NON_BILLABLE", "TOLL_FREE", "DID", "OUTBOUND_LD", "FORWARDED",
        "J:INTRASTATE", "J:INTERSTATE", "J:INDETERMINATE", "J:INTERNATIONAL",
        "ORIGIN_UNKNOWN", "OFFSHORE", "PAYPHONE", "TOLL_FREE_DIALED",
        "JURISDICTION_INDETERMINATE", "SHORT_CALL", "FRAUD_SUSPECT",
        "standard@2026-01-01T00:00:00Z", "standard@2026-11-16T00:00:00Z",
        "wholesale@2026-01-01T00:00:00Z", "wholesale@2026-11-16T00:00:00Z",
    ):  # fmt: skip
        assert covered[expected] > 0, f"{expected} never occurred"


def _event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "call_id": "E", "revision": 0, "account_id": "ACC-1001", "trunk_id": "TRK-1",
        "direction": "INBOUND", "leg": "ORIGINAL", "calling_number": "+12125550100",
        "called_number": "+18005551234", "original_calling_number": None, "start_time": WHEN,
        "duration_ms": 61_000, "disposition": "ANSWERED", "ani_ii": None,
        "sip_response_code": 200, "switch_id": "SW-1",
    }  # fmt: skip
    base.update(fields)
    return base


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pydict(
        {f.name: [r.get(f.name) for r in rows] for f in EVENT_SCHEMA}, schema=EVENT_SCHEMA
    )


OUT = {"direction": "OUTBOUND"}
FWD = {"direction": "OUTBOUND", "leg": "FORWARDED"}
EDGE_CASES: dict[str, dict[str, Any]] = {
    "empty trunk_id": {"trunk_id": ""},
    "unknown enum symbol": {"direction": "SIDEWAYS"},
    "null leg (defaults to ORIGINAL)": {"leg": None},
    "null revision": {"revision": None},
    "negative duration and unknown account": {"duration_ms": -5, "account_id": "ACC-9999"},
    "called number with a trailing newline": {"called_number": "+18005551234\n"},
    "calling number with a trailing newline": {"calling_number": "+12125550100\n"},
    "+1 with 9 digits": {"called_number": "+1800555123"},
    "7 digits international": {**OUT, "called_number": "+4420123"},
    "8 digits international": {**OUT, "called_number": "+44201234"},
    "16 digits": {**OUT, "called_number": "+4420123456789012"},
    "non-ASCII digit": {"called_number": "+1800555\u0661234"},
    "before the first tariff version": {"start_time": datetime(2025, 12, 31, 23, 59, tzinfo=UTC)},
    "at the second version instant": {
        "start_time": datetime(2026, 11, 16, tzinfo=UTC), "calling_number": "+19075550100",
    },
    "answered with 0 ms": {"duration_ms": 0},
    "busy with a duration": {"disposition": "BUSY", "duration_ms": 5000},
    "ani_ii 29 is not a payphone": {"ani_ii": "29", "duration_ms": 1},
    "ani_ii 27 on a DID": {"ani_ii": "27", "called_number": "+12125550199"},
    "inbound leg marked FORWARDED": {"leg": "FORWARDED", "original_calling_number": "+19075550100"},
    "forwarded, malformed original caller": {
        **FWD, "original_calling_number": "+1907", "called_number": "+13125550199",
    },
    "forwarded, no original caller": {**FWD, "called_number": "+13125550199"},
    "forwarded to toll-free": {**FWD, "called_number": "+18885550100"},
    "Canada origin to an unknown NPA": {
        **OUT, "calling_number": "+14165550100", "called_number": "+10005550100",
    },
    "international origin to the US": {
        **OUT, "calling_number": "+442012345678", "called_number": "+13125550100",
    },
    "unknown NPA origin": {**OUT, "calling_number": "+10005550100", "called_number": "+13125550100"},
    "longest prefix 4420": {**OUT, "called_number": "+442071234567", "duration_ms": 29_000},
    "Mexico destination": {**OUT, "called_number": "+525555550100"},
    "blocklisted Caribbean destination": {**OUT, "called_number": "+18765551234"},
    "blocklisted caller": {"calling_number": "+88212345678"},
    "account override, offshore origin": {"account_id": "ACC-1003", "calling_number": "+19075550100"},
    "wholesale DID, 7 ms": {"account_id": "ACC-1011", "called_number": "+12125550199", "duration_ms": 7},
    "ported caller": {"calling_number": "+12012458428"},
    "6,000 ms": {"duration_ms": 6000},
    "6,001 ms": {"duration_ms": 6001},
    "forwarded, empty original caller": {
        **FWD, "original_calling_number": "", "called_number": "+13125550199",
    },
    "empty calling number": {"calling_number": ""},
    "empty ani_ii and switch_id": {"ani_ii": "", "switch_id": "", "duration_ms": 1},
    "phone number in ani_ii": {"ani_ii": "+12125550104", "duration_ms": 1},
    "Arabic-Indic ani_ii": {"ani_ii": "\u0662\u0667"},
    "one-digit ani_ii": {"ani_ii": "7"},
    "ani_ii with a trailing newline": {"ani_ii": "27\n"},
}  # fmt: skip


def test_core_agrees_with_baseline_on_edge_cases(oracle: Oracle) -> None:
    """Hand-written corner cases of R1-R11 (one event each)."""
    rows = [_event(**fields, call_id=f"EDGE-{i}") for i, fields in enumerate(EDGE_CASES.values())]
    problems, covered = _compare(oracle, _table(rows))
    assert not problems, "\n".join(problems)
    assert covered["ANI_II_INVALID"] > 0


D = Decimal


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"calling_number": "+19075550100", "duration_ms": 61_200},
            {"call_class": "TOLL_FREE", "origin_region": "ALASKA", "increment_class": "US_DOMESTIC",
             "billable_seconds": 66, "rate_per_min": D("0.45"), "usage_charge": D("0.495000"),
             "flags": ["OFFSHORE"]},
        ),
        (
            {"calling_number": "+14165550100", "called_number": "+18885551234", "duration_ms": 12_000},
            {"call_class": "TOLL_FREE", "origin_region": "CANADA", "increment_class": "INTERNATIONAL",
             "billable_seconds": 30, "rate_per_min": D("0.08"), "usage_charge": D("0.040000"),
             "flags": ["OFFSHORE"]},
        ),
        (
            {"called_number": "+18445551234", "duration_ms": 1, "ani_ii": "27"},
            {"call_class": "TOLL_FREE", "origin_region": "US48", "billable_seconds": 6,
             "rate_per_min": D("0.0150"), "usage_charge": D("0.001500"), "surcharge": D("0.60"),
             "total_charge": D("0.601500"), "flags": ["PAYPHONE", "SHORT_CALL"]},
        ),
        (
            {"calling_number": "+525555550100", "duration_ms": 61_000},
            {"call_class": "TOLL_FREE", "origin_region": "MEXICO", "billable_seconds": 120,
             "rate_per_min": D("0.0150"), "usage_charge": D("0.030000"), "flags": []},
        ),
        (
            {"calling_number": None, "duration_ms": 7_000},
            {"call_class": "TOLL_FREE", "origin_region": "UNKNOWN", "increment_class": "US_DOMESTIC",
             "billable_seconds": 12, "usage_charge": D("0.003000"), "flags": ["ORIGIN_UNKNOWN"]},
        ),
        (
            {**OUT, "calling_number": "+13125550100", "called_number": "+13125550199",
             "duration_ms": 30_000},
            {"call_class": "OUTBOUND_LD", "jurisdiction": "INTRASTATE", "billable_seconds": 30,
             "rate_per_min": D("0.0150"), "usage_charge": D("0.007500")},
        ),
        (
            {"disposition": "BUSY", "duration_ms": 0},
            {"call_class": "NON_BILLABLE", "billable_seconds": 0, "usage_charge": D("0.000000"),
             "total_charge": D("0.000000")},
        ),
    ],
    ids=["alaska", "canada", "payphone", "mexico", "caller-missing", "intrastate", "busy"],
)  # fmt: skip
def test_baseline_reproduces_the_worked_examples(
    oracle: Oracle, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Spec section 5, to trust the oracle itself (flat domestic toll-free rate 0.0150)."""
    got = oracle.baseline(_event(**fields))
    assert isinstance(got, dict)
    assert {k: got[k] for k in expected} == expected


WEEK_MS = 7 * 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # R10: the original caller counts on FORWARDED legs (it is the R6 origin) ...
        ({**FWD, "original_calling_number": "+18765550100", "called_number": "+13125550199"},
         {"flags": ["FRAUD_SUSPECT"], "origin_region": "CARIBBEAN"}),
        # ... and not on other legs, where original_calling_number means nothing
        ({**OUT, "original_calling_number": "+18765550100", "called_number": "+13125550199"},
         {"flags": [], "origin_region": "US48"}),
        # R1: a leg of exactly 7 days is rated exactly (int64 micro-dollars stay exact)
        ({"calling_number": "+19075550100", "duration_ms": WEEK_MS},
         {"billable_seconds": 604_800, "usage_charge": D("4536.000000")}),
        # ... one millisecond more, or an absurd value, is a switch error
        ({"duration_ms": WEEK_MS + 1}, {"reason": "IMPLAUSIBLE_DURATION"}),
        ({"duration_ms": 2 * 10**16}, {"reason": "IMPLAUSIBLE_DURATION"}),
        ({"duration_ms": 2**63 - 1}, {"reason": "IMPLAUSIBLE_DURATION"}),
        # several causes: the documented order decides
        ({"duration_ms": WEEK_MS + 1, "called_number": "12125550100"},
         {"reason": "IMPLAUSIBLE_DURATION"}),
        ({"account_id": "ACC-9999", "called_number": "12125550100"},
         {"reason": "MALFORMED_CALLED_NUMBER"}),
        # R1/R6: "" is absent: a FORWARDED leg falls back to calling_number (NY -> IL)
        ({**FWD, "original_calling_number": "", "called_number": "+13125550199"},
         {"origin_region": "US48", "jurisdiction": "INTERSTATE", "flags": [],
          "original_calling_number": None}),
        # R8: an ani_ii that is not two ASCII digits is ignored, not stored, flagged
        ({"ani_ii": "+12125550104", "duration_ms": 1},
         {"ani_ii": None, "surcharge": D("0"), "flags": ["SHORT_CALL", "ANI_II_INVALID"]}),
    ],
    ids=["fwd-original-blocked", "orig-leg-original-ignored", "7-days", "7-days+1ms",
         "2e16-ms", "int64-max-ms", "implausible-before-malformed", "malformed-before-account",
         "fwd-empty-original", "ani-ii-phone-number"],
)  # fmt: skip
def test_decided_corner_cases(
    oracle: Oracle, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Decisions of docs/decisions.md that this test's disagreements led to: both
    implementations give the decided answer."""
    event = _event(**fields)
    rated, dead = oracle.core(_table([event]))
    base = oracle.baseline(event)
    if "reason" in expected:
        assert not rated
        assert [d["reason"] for d in dead] == [expected["reason"]]
        assert isinstance(base, DeadLetter)
        assert base.reason == expected["reason"]
    else:
        assert not dead
        assert isinstance(base, dict)
        assert {k: rated[0][k] for k in expected} == expected
        assert {k: base[k] for k in expected} == expected
