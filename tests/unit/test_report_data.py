"""The report's pure aggregation (:func:`pipeline.report.summarize`) over tiny hand-built
tables: exact ``Decimal`` totals, the latest revision only (as at cycle close, spec
section 4), and surcharges from the rated records (open cycle) or invoice lines (closed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.analytics import open_lake, views
from pipeline.analytics.latest import KEY_HASH
from pipeline.errors import ConfigError
from pipeline.report import RATED_COLUMNS, load_summary, summarize
from pipeline.report.formatting import safe_label, usd
from pipeline.report.model import FROM_INVOICE_LINES, FROM_RATED_RECORDS
from tests.unit.test_query import _build_lake

CYCLE = "2026-11"
MONEY = pa.decimal128(18, 6)
SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("revision", pa.int32()),
        ("account_id", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("billing_cycle", pa.string()),
        ("call_class", pa.string()),
        ("origin_region", pa.string()),
        ("billable_seconds", pa.int64()),
        ("usage_charge", MONEY),
        ("surcharge", MONEY),
        ("total_charge", MONEY),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_file", pa.string()),
        ("source_index", pa.int64()),
    ]
)
INVOICE = pa.schema(
    [
        ("account_id", pa.string()),
        ("line_type", pa.string()),
        ("quantity", MONEY),
        ("unit", pa.string()),
        ("amount", pa.decimal128(18, 2)),
    ]
)


def call(
    call_id: str,
    account: str,
    call_class: str,
    seconds: int,
    usage: str,
    surcharge: str = "0",
    *,
    revision: int = 0,
    day: int = 3,
    cycle: str = CYCLE,
    region: str = "US",
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "revision": revision,
        "account_id": account,
        "start_time": datetime(2026, 11, day, 12, tzinfo=UTC),
        "billing_cycle": cycle,
        "call_class": call_class,
        "origin_region": region,
        "billable_seconds": seconds,
        "usage_charge": D(usage),
        "surcharge": D(surcharge),
        "total_charge": D(usage) + D(surcharge),
        "source_partition": 0,
        "source_offset": revision,
        "source_file": None,
        "source_index": None,
    }


RATED = pa.Table.from_pylist(
    [
        call("c1", "ACC-A", "TOLL_FREE", 120, "0.150000", revision=0),
        call("c1", "ACC-A", "TOLL_FREE", 120, "0.300000", revision=1),  # supersedes rev 0
        call("c2", "ACC-A", "OUTBOUND_LD", 61, "0.123457", "0.600000", day=30, region="CA"),
        call("c3", "ACC-B", "NON_BILLABLE", 0, "0"),
        call("c4", "ACC-B", "DID", 30, "0.000001"),  # superseded by a revision elsewhere
        call("c5", "ACC-B", "TOLL_FREE", 60, "9.000000", cycle="2026-10"),  # other cycle
    ],
    schema=SCHEMA,
)
ELSEWHERE = pa.table({"call_id": ["c4"], "revision": pa.array([2], pa.int32())})
DEAD = pa.table({"reason": ["UNKNOWN_ACCOUNT", "NEGATIVE_DURATION", "UNKNOWN_ACCOUNT", "B"]})


def test_rated_columns_are_what_summarize_reads_and_hold_no_phone_number() -> None:
    assert set(RATED_COLUMNS) == set(SCHEMA.names)
    assert not any("number" in c for c in RATED_COLUMNS)  # CPNI


def test_open_cycle_totals_are_exact_over_latest_revisions() -> None:
    s = summarize(RATED, CYCLE, elsewhere=ELSEWHERE, dead_letters=DEAD)

    assert s.records == 5  # every revision of the cycle; c5 is another cycle's
    assert s.totals.calls == 3  # c1 (rev 1), c2, c3
    assert s.superseded == 2
    assert s.totals.billable_calls == 2
    assert s.totals.billable_seconds == 181
    assert s.totals.minutes == D(181) / D(60)
    assert s.totals.usage == D("0.423457")
    assert s.totals.surcharge == D("0.600000")
    assert s.totals.total == D("1.023457")
    assert [(g.key, g.calls, g.total) for g in s.by_class] == [
        ("TOLL_FREE", 1, D("0.300000")),
        ("OUTBOUND_LD", 1, D("0.723457")),
        ("NON_BILLABLE", 1, D(0)),
    ]
    assert [(g.key, g.total) for g in s.by_region] == [("CA", D("0.723457")), ("US", D("0.3"))]
    assert [(a.totals.key, a.totals.total, a.invoice_total) for a in s.accounts] == [
        ("ACC-A", D("1.023457"), None),
        ("ACC-B", D(0), None),
    ]

    assert len(s.days) == 30
    assert s.days[0].day == date(2026, 11, 1)
    assert sum((d.total.total for d in s.days), D(0)) == s.totals.total
    assert s.days[2].total.total == D("0.300000")
    assert s.days[29].by_class["OUTBOUND_LD"].total == D("0.723457")

    # Open cycle: only the per-call payphone surcharge (R8) is known; C2-C4 at close.
    assert not s.closed
    assert s.invoice_total is None
    assert s.surcharge_source == FROM_RATED_RECORDS
    assert [(x.label, x.amount, x.lines) for x in s.surcharges] == [
        ("payphone", D("0.600000"), 1),
        ("short-call", None, None),
        ("carrier-mix", None, None),
        ("minute-cap", None, None),
    ]
    assert s.dead_letters == (("UNKNOWN_ACCOUNT", 2), ("B", 1), ("NEGATIVE_DURATION", 1))
    assert s.dead_letter_count == 4


def test_closed_cycle_takes_surcharges_and_totals_from_invoice_lines() -> None:
    """C1-C4 lines of a closed cycle: the page's totals are their exact sums."""
    invoice = pa.Table.from_pylist(
        [
            {"account_id": "ACC-A", "line_type": "USAGE_TOLL_FREE_DOMESTIC",
             "quantity": D(2), "unit": "MIN", "amount": D("0.30")},
            {"account_id": "ACC-A", "line_type": "PAYPHONE_SURCHARGE",
             "quantity": D(1), "unit": "CALL", "amount": D("0.60")},
            {"account_id": "ACC-A", "line_type": "SHORT_CALL_SURCHARGE",
             "quantity": D(1), "unit": "CALL", "amount": D("0.05")},
            {"account_id": "ACC-B", "line_type": "SHORT_CALL_SURCHARGE",
             "quantity": D(2), "unit": "CALL", "amount": D("0.10")},
        ],
        schema=INVOICE,
    )  # fmt: skip
    s = summarize(RATED, CYCLE, elsewhere=ELSEWHERE, invoice_lines=invoice)

    assert s.closed
    assert s.invoice_total == D("1.05")
    assert s.invoice_lines == 4
    assert s.surcharge_source == FROM_INVOICE_LINES
    assert [(x.label, x.amount, x.quantity, x.lines) for x in s.surcharges] == [
        ("payphone", D("0.60"), D(1), 1),
        ("short-call", D("0.15"), D(3), 2),
        ("carrier-mix", D(0), D(0), 0),
        ("minute-cap", D(0), D(0), 0),
    ]
    assert {a.totals.key: a.invoice_total for a in s.accounts} == {
        "ACC-A": D("0.95"),
        "ACC-B": D("0.10"),
    }
    assert s.dead_letters == ()


def test_empty_cycle_and_bad_cycle() -> None:
    s = summarize(RATED.slice(0, 0), CYCLE)
    assert (s.records, s.totals.calls, s.totals.total, s.accounts) == (0, 0, D(0), ())
    assert len(s.days) == 30
    with pytest.raises(ConfigError, match="YYYY-MM"):
        summarize(RATED, "2026-13")


def test_money_is_rounded_half_up_exactly_and_phone_like_labels_are_masked() -> None:
    assert usd(D("0.005")) == "$0.01"
    assert usd(D("-1234.565")) == "-$1,234.57"
    assert usd(D("2.675")) == "$2.68"  # 2.675 as a float rounds down
    assert safe_label("ACC-+12125551199") == "ACC-[masked]"


# ------------------------------------------------------------------ over the lake (issue 9)
def test_load_summary_over_the_scans_equals_summarize_over_the_loaded_tables(
    tmp_path: Path,
) -> None:
    """Issue 9 item 7: the report aggregates in DuckDB over the lake's scans; the summary
    is exactly the one of the cycle loaded whole (corrections across cycles, a closed
    cycle, dead letters), Decimal scales included."""
    lake = _build_lake(tmp_path / "lake")
    assert lake.cycles() == ["2026-11", "2026-12"]
    for cycle in lake.cycles():
        loaded = summarize(
            lake.read_rated(cycle, columns=RATED_COLUMNS),
            cycle,
            elsewhere=lake.max_revisions_outside(cycle),
            invoice_lines=lake.read_invoice_lines(cycle),
            dead_letters=lake.read_dead_letters(),
        )
        scanned = load_summary(lake, cycle)
        assert scanned == loaded
        assert repr(scanned) == repr(loaded)
    assert load_summary(lake, "2026-11").superseded == 4  # c-1, c-8 twice, c-2 (moved)


def test_latest_revision_is_exact_whatever_calls_are_candidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call id hash seen twice only sends the call to the exact row_number() branch:
    with every call a candidate (as if all hashes collided) nothing changes."""
    lake = _build_lake(tmp_path / "lake")
    before = [load_summary(lake, c) for c in lake.cycles()]
    con = open_lake(lake)
    try:
        plain = sorted(con.sql("SELECT * FROM rated_calls").to_arrow_table().to_pylist(), key=str)
    finally:
        con.close()

    def every_hash(con: Any, relation: str, rows: int | None = None) -> Any:
        found = con.sql(f"SELECT DISTINCT {KEY_HASH} FROM {relation}").fetchall()  # noqa: S608
        return np.array(sorted(h for (h,) in found), np.uint64)

    monkeypatch.setattr(views, "candidate_hashes", every_hash)
    assert [load_summary(lake, c) for c in lake.cycles()] == before
    con = open_lake(lake)
    try:
        every = sorted(con.sql("SELECT * FROM rated_calls").to_arrow_table().to_pylist(), key=str)
    finally:
        con.close()
    assert every == plain
