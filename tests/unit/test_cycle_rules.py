"""Cycle rules C1-C4 of spec section 4 over rated records of the pure core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pyarrow as pa

from pipeline.rating.cycle import close_cycle, latest_revisions
from tests.unit.events import book, event, rate
from tests.unit.refdata_fixture import tiny_reference

REF = tiny_reference()
US = "+12125551199"  # RBOC block, NY
CLEC = "+12125550199"  # CLEC thousands block


def lines(
    *events: dict[str, Any], cycle: str = "2026-11", **kw: Any
) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    rated = rate(*events).rated
    out = close_cycle(rated, REF, book(), cycle, **kw)
    return {(r["account_id"], r["line_type"], r["trunk_id"]): r for r in out.to_pylist()}


def calls(n: int, **fields: Any) -> list[dict[str, Any]]:
    prefix = fields.pop("prefix", "c")
    return [event(call_id=f"{prefix}{i}", **fields) for i in range(n)]


def test_c1_usage_lines_per_class_rounded_half_up_to_cents() -> None:
    """C1: one line per class; offshore toll-free apart; 0.495 -> 0.50 (half-up)."""
    got = lines(
        event(call_id="a"),  # Alaska offshore 0.495000
        event(call_id="b", calling_number=US, duration_ms=60_000),  # flat 0.015
        event(call_id="c", called_number="+12125550100", calling_number=US),  # DID 0
        event(call_id="d", direction="OUTBOUND", called_number="+13125550199", calling_number=US),
        event(
            call_id="e",
            direction="OUTBOUND",
            leg="FORWARDED",
            called_number="+13125550199",
            calling_number=US,
        ),
        event(call_id="f", disposition="BUSY", duration_ms=0),
    )
    assert got[("ACC-1", "USAGE_TOLL_FREE_OFFSHORE", None)]["amount"] == D("0.50")
    assert got[("ACC-1", "USAGE_TOLL_FREE_OFFSHORE", None)]["quantity"] == D("1.1")
    assert got[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC", None)]["amount"] == D("0.02")  # 0.015 -> 0.02
    assert got[("ACC-1", "USAGE_DID", None)]["amount"] == D("0.00")
    assert got[("ACC-1", "USAGE_OUTBOUND_LD", None)]["amount"] == D("0.01")  # 61.2 s -> 66 s @ .01
    assert got[("ACC-1", "USAGE_FORWARDED", None)]["amount"] == D("0.01")
    assert ("ACC-1", "PAYPHONE_SURCHARGE", None) not in got


def test_c1_sums_exact_before_rounding_once() -> None:
    """C1: 3 x 0.001500 = 0.0045 -> 0.00; summed exactly, rounded once per line."""
    got = lines(*calls(3, calling_number=US, duration_ms=1))
    assert got[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC", None)]["amount"] == D("0.00")
    got = lines(*calls(4, calling_number=US, duration_ms=1))  # 0.006 -> 0.01
    assert got[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC", None)]["amount"] == D("0.01")


def test_c1_payphone_surcharge_line() -> None:
    """C1: PAYPHONE_SURCHARGE is the sum of the surcharges."""
    got = lines(*calls(3, calling_number=US, duration_ms=60_000, ani_ii="27"))
    line = got[("ACC-1", "PAYPHONE_SURCHARGE", None)]
    assert (line["quantity"], line["unit_price"], line["amount"]) == (D(3), D("0.60"), D("1.80"))


def test_highest_revision_of_each_call_counts_once() -> None:
    """Section 4: only the highest revision of each call_id; exact re-sends count once."""
    evs = [
        event(call_id="x", calling_number=US, duration_ms=60_000, revision=0),
        event(call_id="x", calling_number=US, duration_ms=120_000, revision=2),
        event(call_id="x", calling_number=US, duration_ms=600_000, revision=1),
        event(call_id="x", calling_number=US, duration_ms=120_000, revision=2),
    ]
    assert lines(*evs)[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC", None)]["quantity"] == D(2)
    kept = latest_revisions(rate(*evs).rated)
    assert kept.num_rows == 1
    assert kept.column("revision").to_pylist() == [2]


def test_revision_in_another_cycle_supersedes() -> None:
    """Section 4 (decision): a higher revision rated in another cycle removes the call."""
    elsewhere = pa.table({"call_id": ["x"], "revision": pa.array([1], pa.int32())})
    got = lines(
        event(call_id="x", calling_number=US),
        event(call_id="y", calling_number=US),
        elsewhere=elsewhere,
    )
    assert got[("ACC-1", "USAGE_TOLL_FREE_DOMESTIC", None)]["quantity"] == D("1.1")


def test_c2_short_call_surcharge_at_five_percent() -> None:
    """C2: short / completed >= 0.05 -> short * 0.03; unanswered calls do not count."""
    normal = calls(19, prefix="n", calling_number=US, duration_ms=60_000)
    short = calls(1, prefix="s", calling_number=US, duration_ms=6_000)
    busy = calls(5, prefix="b", disposition="BUSY", duration_ms=0)
    line = lines(*normal, *short, *busy)[("ACC-1", "SHORT_CALL_SURCHARGE", None)]
    assert (line["quantity"], line["unit_price"], line["amount"]) == (D(1), D("0.03"), D("0.03"))
    more = calls(20, prefix="n", calling_number=US, duration_ms=60_000)
    assert ("ACC-1", "SHORT_CALL_SURCHARGE", None) not in lines(*more, *short)  # 1/21 < 5%
    just_over = calls(1, prefix="s", calling_number=US, duration_ms=6_001)
    assert ("ACC-1", "SHORT_CALL_SURCHARGE", None) not in lines(*normal, *just_over)


def test_c3_carrier_mix_surcharge_on_needed_minutes() -> None:
    """C3: RBOC/WIRELESS share < 0.75 over flat toll-free calls -> 0.06/min on
    0.75 * M_all - M_rbw. One RBOC and one CLEC minute: 0.75*2 - 1 = 0.5 min = 0.03."""
    got = lines(
        event(call_id="r", calling_number=US, duration_ms=60_000),
        event(call_id="c", calling_number=CLEC, duration_ms=60_000),
        event(call_id="o", duration_ms=600_000),  # offshore: not in C3
    )
    line = got[("ACC-1", "CARRIER_MIX_SURCHARGE", None)]
    assert (line["quantity"], line["unit_price"], line["amount"]) == (
        D("0.5"),
        D("0.06"),
        D("0.03"),
    )


def test_c3_no_line_when_share_met() -> None:
    """C3: three RBOC/WIRELESS calls and one CLEC = 0.75: no surcharge."""
    evs = [
        *calls(3, prefix="r", calling_number=US, duration_ms=60_000),
        event(call_id="c", calling_number=CLEC, duration_ms=60_000),
    ]
    assert ("ACC-1", "CARRIER_MIX_SURCHARGE", None) not in lines(*evs)


def test_c4_minute_cap_per_trunk_only_when_enforced() -> None:
    """C4: inbound minutes over 1,500 per trunk at 0.02/min, only with enforce_minute_cap."""
    hour = 3_600_000
    big = [
        event(call_id=f"t1-{i}", trunk_id="T1", calling_number=US, duration_ms=hour)
        for i in range(26)
    ]
    at_cap = [
        event(call_id=f"t2-{i}", trunk_id="T2", calling_number=US, duration_ms=hour)
        for i in range(25)
    ]
    capped = [
        event(
            call_id=f"k{i}", account_id="ACC-2", trunk_id="T9", calling_number=US, duration_ms=hour
        )
        for i in range(30)
    ]
    got = lines(*big, *at_cap, *capped)
    line = got[("ACC-1", "MINUTE_CAP_OVERAGE", "T1")]  # 1,560 min: 60 over
    assert (line["quantity"], line["unit_price"], line["amount"]) == (D(60), D("0.02"), D("1.20"))
    assert ("ACC-1", "MINUTE_CAP_OVERAGE", "T2") not in got  # exactly 1,500
    assert not [k for k in got if k[0] == "ACC-2" and k[1] == "MINUTE_CAP_OVERAGE"]


def test_cycle_parameters_from_version_at_last_instant() -> None:
    """Section 4: the cycle's parameters come from the version in effect at its last instant."""
    nov = lines(event(calling_number=US))
    assert {r["tariff_version"] for r in nov.values()} == {"standard@2026-11-16T00:00:00Z"}
    octo = lines(
        event(calling_number=US, start_time=datetime(2026, 10, 5, tzinfo=UTC)), cycle="2026-10"
    )
    assert {r["tariff_version"] for r in octo.values()} == {"standard@2026-01-01T00:00:00Z"}


def test_only_the_cycles_records_count_and_closing_is_deterministic() -> None:
    """Section 4: records of other cycles are ignored; the same input gives the same lines."""
    evs = [
        event(call_id="n", calling_number=US),
        event(
            call_id="o", calling_number=US, start_time=datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
        ),
    ]
    rated = rate(*evs).rated
    first = close_cycle(rated, REF, book(), "2026-11")
    second = close_cycle(rated.take(pa.array([1, 0])), REF, book(), "2026-11")
    assert first.equals(second)
    assert first.column("quantity").to_pylist() == [D("1.1")]
    assert timedelta(0) == timedelta(0)
