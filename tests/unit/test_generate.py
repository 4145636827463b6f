"""Synthetic switch traffic (pipeline.generate): exact size, determinism and the mix."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.errors import ReferenceDataError
from pipeline.generate import generate_events, write_generated
from pipeline.io.avro_files import iter_event_batches
from pipeline.rating.columns import EVENT_SCHEMA

SHIPPED_REFDATA = Path(__file__).resolve().parents[2] / "pipeline" / "data" / "refdata"
START = datetime(2026, 11, 1, tzinfo=UTC)
CALL_FIELDS = [f.name for f in EVENT_SCHEMA][:15]

NPA_REGIONS = """npa,region,state
212,US48,NY
315,US48,NY
312,US48,IL
773,US48,IL
415,US48,CA
213,US48,CA
907,ALASKA,AK
808,HAWAII,HI
787,PUERTO_RICO,PR
939,PUERTO_RICO,PR
340,USVI,VI
671,GUAM,GU
670,CNMI,MP
684,AMERICAN_SAMOA,AS
416,CANADA,ON
604,CANADA,BC
514,CANADA,QC
876,CARIBBEAN,JM
242,CARIBBEAN,BS
"""
NPANXX = """prefix,ocn,state,rate_center
212555,XR01,NY,NY-1
2125551,XW01,NY,NY-1
315222,XI01,NY,NY-2
312555,XR02,IL,IL-1
773202,XC01,IL,IL-2
415555,XR03,CA,CA-1
213444,XW02,CA,CA-2
907555,XI02,AK,AK-1
808555,XI03,HI,HI-1
787555,XR04,PR,PR-1
416555,XC02,ON,ON-1
"""
ACCOUNTS = """account_id,tariff_id,toll_free_flat_per_min,enforce_minute_cap
ACC-1001,standard,,true
ACC-1002,standard,0.0120,false
ACC-1003,wholesale,,true
ACC-1004,standard,,false
"""
LNP = """tn,ocn,lrn
2125550100,XW01,2125550000
3122220199,XC01,3125550000
"""
BLOCKLIST = """prefix,reason
882,premium-rate revenue share fraud
"""


@pytest.fixture(scope="module")
def refdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny reference directory with the columns of the shipped one."""
    d = tmp_path_factory.mktemp("refdata")
    for name, text in {
        "npa_regions.csv": NPA_REGIONS,
        "npanxx.csv": NPANXX,
        "accounts.csv": ACCOUNTS,
        "lnp.csv": LNP,
        "blocklist.csv": BLOCKLIST,
    }.items():
        (d / name).write_text(text, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def events(refdata: Path) -> pa.Table:
    return generate_events(20_000, seed=7, refdata_dir=refdata)


def _starts(col: pa.ChunkedArray, prefix: str) -> int:
    return int(pc.sum(pc.starts_with(pc.fill_null(col, ""), prefix)).as_py() or 0)


def _where(table: pa.Table, **equal: str) -> pa.Table:
    for name, value in equal.items():
        table = table.filter(pc.equal(table.column(name), value))
    return table


# --------------------------------------------------------------------------- size, determinism


@pytest.mark.parametrize(
    ("n", "chunk"), [(0, 100), (1, 100), (7, 100), (1_000, 300), (2_345, 1_000)]
)
def test_exactly_n_events_of_the_event_schema(refdata: Path, n: int, chunk: int) -> None:
    table = generate_events(n, seed=1, refdata_dir=refdata, chunk=chunk)
    assert table.num_rows == n
    assert table.schema.equals(EVENT_SCHEMA)


def test_deterministic_per_seed(refdata: Path) -> None:
    a = generate_events(3_000, seed=42, refdata_dir=refdata, chunk=1_000)
    b = generate_events(3_000, seed=42, refdata_dir=refdata, chunk=1_000)
    c = generate_events(3_000, seed=43, refdata_dir=refdata, chunk=1_000)
    assert a.equals(b)
    assert not a.equals(c)


def test_file_holds_the_generated_events_and_is_reproducible(refdata: Path, tmp_path: Path) -> None:
    done: list[int] = []
    path = tmp_path / "g.avro"
    assert write_generated(path, 2_500, 5, refdata, chunk=1_000, progress=done.append) == 2_500
    assert done == [1_000, 1_000, 500]
    read = pa.concat_tables([b.events for b in iter_event_batches(path)])
    expected = generate_events(2_500, seed=5, refdata_dir=refdata, chunk=1_000)
    assert read.select(CALL_FIELDS).equals(expected.select(CALL_FIELDS))
    again = tmp_path / "again.avro"
    write_generated(again, 2_500, 5, refdata, chunk=1_000)
    assert again.read_bytes() == path.read_bytes()


def test_missing_reference_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReferenceDataError, match=r"accounts\.csv"):
        generate_events(10, refdata_dir=tmp_path)


# --------------------------------------------------------------------------- identity, time


def test_call_id_revision_unique_and_well_formed(events: pa.Table) -> None:
    keys = list(
        zip(
            events.column("call_id").to_pylist(), events.column("revision").to_pylist(), strict=True
        )
    )
    assert len(set(keys)) == len(keys)
    assert all(
        pc.match_substring_regex(events.column("call_id"), r"^SW-[A-Z]{3}1-\d{12}$").to_pylist()
    )
    trunk_ok = pc.match_substring_regex(events.column("trunk_id"), r"^TRK-ACC-\d{4}-[123]$")
    assert all(trunk_ok.to_pylist())
    accounts = set(events.column("account_id").to_pylist())
    assert {"ACC-1001", "ACC-1002", "ACC-1003", "ACC-1004"} <= accounts


def test_start_times_within_the_period(events: pa.Table) -> None:
    lo = pc.min(events.column("start_time")).as_py()
    hi = pc.max(events.column("start_time")).as_py()
    assert lo >= START
    assert hi < START + timedelta(days=30)
    originals = events.filter((pc.field("leg") == "ORIGINAL") & (pc.field("revision") == 0))
    assert originals.column("start_time").to_pylist() == sorted(
        originals.column("start_time").to_pylist()
    )


# --------------------------------------------------------------------------- the mix


def test_inbound_toll_free_and_did(events: pa.Table) -> None:
    inbound = _where(events, direction="INBOUND")
    called = inbound.column("called_number")
    for npa in ("800", "833", "844", "855", "866", "877", "888"):
        assert _starts(called, f"+1{npa}") > 0, npa
    toll_free = sum(
        _starts(called, f"+1{npa}") for npa in ("800", "833", "844", "855", "866", "877", "888")
    )
    assert 0.5 < toll_free / inbound.num_rows < 0.9
    assert inbound.num_rows - toll_free > 0.1 * inbound.num_rows  # DID inbound


def test_origins_offshore_canada_caribbean_mexico_international(events: pa.Table) -> None:
    calling = _where(events, direction="INBOUND").column("calling_number")
    offshore = ("+1907", "+1808", "+1787", "+1939", "+1340", "+1671", "+1670")
    for prefix in (*offshore, "+1416", "+1604", "+1514", "+1876", "+52", "+44", "+91"):
        assert _starts(calling, prefix) > 0, prefix
    assert _starts(calling, "+12125550100") > 0  # a ported number of lnp.csv
    assert _starts(calling, "+1212555") + _starts(calling, "+1312555") > 0.2 * len(calling)


def test_ani_ii_mix(events: pa.Table) -> None:
    counts = Counter(_where(events, direction="INBOUND").column("ani_ii").to_pylist())
    for digits in ("27", "70", "29", "00"):
        assert counts[digits] > 0, digits
    assert counts[None] > 0
    assert set(_where(events, direction="OUTBOUND").column("ani_ii").to_pylist()) == {None}


def test_outbound_long_distance_destinations(events: pa.Table) -> None:
    outbound = _where(events, direction="OUTBOUND", leg="ORIGINAL")
    called = outbound.column("called_number")
    for prefix in ("+4420", "+91", "+52", "+1416", "+1876", "+1800", "+1907", "+882"):
        assert _starts(called, prefix) > 0, prefix
    state = {"212": "NY", "315": "NY", "312": "IL", "773": "IL", "415": "CA", "213": "CA"}
    pairs = [
        (state.get(a[2:5]), state.get(b[2:5]))
        for a, b in zip(
            outbound.column("calling_number").to_pylist(), called.to_pylist(), strict=True
        )
        if a and b and a.startswith("+1") and b.startswith("+1")
    ]
    same = sum(1 for a, b in pairs if a and a == b)
    other = sum(1 for a, b in pairs if a and b and a != b)
    assert same > 0.15 * len(pairs)
    assert other > 0.15 * len(pairs)


def test_forwarded_legs_pair_with_an_inbound_leg(events: pa.Table) -> None:
    fwd = _where(events, leg="FORWARDED")
    assert 0.02 < fwd.num_rows / events.num_rows < 0.06
    assert set(fwd.column("direction").to_pylist()) == {"OUTBOUND"}
    assert fwd.column("original_calling_number").null_count < fwd.num_rows
    assert _where(events, leg="ORIGINAL").column("original_calling_number").null_count == (
        events.num_rows - fwd.num_rows
    )
    inbound = {
        (t, c)
        for t, c in zip(
            _where(events, direction="INBOUND").column("start_time").to_pylist(),
            _where(events, direction="INBOUND").column("calling_number").to_pylist(),
            strict=True,
        )
    }
    row = fwd.filter(pc.is_valid(fwd.column("original_calling_number"))).slice(0, 1).to_pylist()[0]
    assert (row["start_time"], row["original_calling_number"]) in inbound


def test_dispositions_and_durations(events: pa.Table) -> None:
    for disposition in ("BUSY", "NO_ANSWER", "FAILED", "CANCELLED"):
        rows = _where(events, disposition=disposition)
        assert rows.num_rows > 0, disposition
        assert set(rows.column("duration_ms").to_pylist()) == {0}
    answered = events.filter(
        (pc.field("disposition") == "ANSWERED")
        & (pc.field("revision") == 0)
        & (pc.field("duration_ms") >= 0)
    )
    durations = answered.column("duration_ms")
    assert answered.filter(pc.field("duration_ms") == 0).num_rows > 0
    short = pc.sum(pc.and_(pc.greater(durations, 0), pc.less_equal(durations, 6_000))).as_py()
    assert 0.03 <= short / answered.num_rows <= 0.08
    median = pc.approximate_median(durations).as_py()
    assert 60_000 <= median <= 120_000
    assert pc.max(durations).as_py() > 1_800_000  # a long tail


def test_corrections_resend_a_call_with_a_higher_revision(events: pa.Table) -> None:
    revisions = Counter(events.column("revision").to_pylist())
    assert revisions[1] > 0
    assert revisions[2] > 0
    assert 0.005 < (revisions[1] + revisions[2]) / events.num_rows < 0.02
    first = {
        cid: d
        for cid, d, r in zip(
            events.column("call_id").to_pylist(),
            events.column("duration_ms").to_pylist(),
            events.column("revision").to_pylist(),
            strict=True,
        )
        if r == 0
    }
    corrected = events.filter(pc.greater(events.column("revision"), 0)).to_pylist()
    assert all(c["call_id"] in first for c in corrected)
    changed = sum(1 for c in corrected if c["duration_ms"] != first[c["call_id"]])
    assert changed > 0.9 * len(corrected)


def test_bad_events_small_but_present(events: pa.Table) -> None:
    called = events.column("called_number")
    calling = events.column("calling_number")
    negative = pc.sum(pc.less(events.column("duration_ms"), 0)).as_py()
    no_plus = pc.sum(pc.invert(pc.starts_with(called, "+"))).as_py()
    too_short = pc.sum(
        pc.and_(pc.starts_with(called, "+"), pc.less(pc.utf8_length(called), 9))
    ).as_py()
    unknown_account = _where(events, account_id="ACC-9999").num_rows
    malformed_calling = pc.sum(pc.less(pc.utf8_length(calling), 9)).as_py()
    assert min(negative, no_plus, too_short, unknown_account, malformed_calling) > 0
    assert calling.null_count > 0
    dead_letter_causes = negative + no_plus + too_short + unknown_account
    assert 0.001 < dead_letter_causes / events.num_rows < 0.01


@pytest.mark.skipif(not (SHIPPED_REFDATA / "npanxx.csv").is_file(), reason="no shipped refdata")
def test_shipped_reference_directory(tmp_path: Path) -> None:
    table = generate_events(5_000, seed=0, refdata_dir=SHIPPED_REFDATA)
    assert table.num_rows == 5_000
    assert _starts(table.column("calling_number"), "+1907") > 0
